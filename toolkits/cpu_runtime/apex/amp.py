"""``apex.amp.initialize``: mixed precision is off on a CPU, so the model (and optimizers) come back as they are."""


def initialize(model, optimizers=None, **kwargs):
    return model if optimizers is None else (model, optimizers)
