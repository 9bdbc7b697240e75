"""Saving and loading models (Keras 3's ``model.save`` / ``keras.saving.load_model``).

``model.save(path)`` writes one file holding the architecture, the weights, the compile
settings and the optimizer's state; ``load_model(path)`` rebuilds the model from it so that
training resumes exactly where it stopped. ``model.save_weights(path)`` and
``model.load_weights(path)`` handle the weights alone. Loading never runs code from the
file: configs only name classes and functions, which are looked up among fastnn's own,
those registered with ``register_keras_serializable`` and the given ``custom_objects``.

The files are fastnn's own format (``.fastnn``: ``model.save("model.fastnn")``,
``model.save_weights("model.weights.fastnn")``), not Keras' (``.keras`` archives hold
HDF5 weights, which would need h5py), whatever their name: Keras cannot read them and
fastnn does not read Keras' files. Keras names (``.keras``, ``.h5``, ``.weights.h5``) are
still accepted, so that Keras programs run unchanged, with a warning that says what was
written; loading a file that Keras wrote raises a ``ValueError`` that says how to bring the
model over (rebuild it with fastnn layers, then ``set_weights(keras_model.get_weights())``).

The package, one concern a module:

* registration.py: the one registry: the user's (``register_keras_serializable``,
  ``custom_object_scope``) and fastnn's own classes by kind, which register themselves;
* serialization.py: objects to and from JSON-ready descriptions
  (``serialize_keras_object``, ``deserialize_keras_object``);
* archive.py: the file format (a zip of fastnn.json and .npy arrays with checksums),
  atomic writes and the checked reader;
* model_io.py: ``save_model``, ``load_model``, ``save_weights``, ``load_weights``.
"""

from .archive import FORMAT_NAME, FORMAT_VERSION, InvalidFileError
from .model_io import load_model, load_weights, save_model, save_weights
from .registration import (CustomObjectScope, custom_object_scope, get_custom_objects, get_registered_name,
                           get_registered_object, register_keras_serializable)
from .serialization import UnknownObjectError, deserialize_keras_object, serialize_keras_object

__all__ = ["register_keras_serializable", "get_registered_name", "get_registered_object", "get_custom_objects",
           "CustomObjectScope", "custom_object_scope", "serialize_keras_object", "deserialize_keras_object",
           "save_model", "load_model", "save_weights", "load_weights", "UnknownObjectError", "InvalidFileError"]
