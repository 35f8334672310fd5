"""Built-in domain plugins (see :mod:`qdaif.plugin`): ``multitask`` and ``rewrites``."""
