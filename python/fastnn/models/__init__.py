"""Models: ``Model`` (functional graphs and subclassing) and ``Sequential`` (the chain case), on one
graph execution core (``fastnn.graph``). Training loops live in ``fastnn.trainer``, saving in
``fastnn.saving``."""

from .model import Model
from .sequential import Sequential


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Loads a model saved with ``model.save``.

    Args:
        filepath: str or path-like.
        custom_objects: dict, default None: name -> class or function, for custom layers,
            losses, metrics or activations not registered with
            ``fastnn.saving.register_keras_serializable``.
        compile: bool, default True: compile as saved (optimizer with its state, loss,
            metrics, loss weights), so that training resumes exactly. False: uncompiled.
        safe_mode: bool, default True: accepted for Keras compatibility; fastnn files never
            carry code, so loading is always safe.

    Returns:
        The model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a fastnn model file, truncated or corrupted, arrays that would need
            unpickling, or an unknown custom class or function (named, with the fix). A
            file that Keras wrote (``.keras``, ``.h5``) is refused with a message that says
            so and how to bring the model over (rebuild it with fastnn layers, then
            ``set_weights(keras_model.get_weights())``); fastnn reads only its own format
            (``.fastnn``, recognised by content, whatever the name).
    """
    from .. import saving

    return saving.load_model(filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)


__all__ = ["Model", "Sequential", "load_model"]
