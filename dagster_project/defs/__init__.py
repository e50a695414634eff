"""The demo location's defs folder (dg.toml: ``defs_module``): one component per folder
(``debian_embeddings/defs.yaml``) and the Python definitions a component cannot express
(``pipeline.py``)."""
