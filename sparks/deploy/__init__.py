"""Deployment: ``export`` a trained model to a ``.sparks`` file (:mod:`sparks.deploy.format` describes it byte by
byte), ``load`` it back into the packed runtime or PyTorch. This ``__init__`` imports nothing, so the torch-free
runtime can import :mod:`sparks.deploy.format` alone."""
