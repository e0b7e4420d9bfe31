"""tailor.training"""


def train(recipe, callbacks=None):
    """Train as the recipe says (pretrain, sft or classification); returns a TrainResult."""
    from tailor.training.run import run

    return run(recipe, callbacks)
