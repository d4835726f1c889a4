"""Photos in: MTCNN face detection (``mtcnn``), EG3D alignment (``align``), camera pose (``pose``).

``jaxinv.preprocess`` is both this package and the public function ``jaxinv.preprocess(image)``:
once the package is imported it shadows the function's lazy attribute on ``jaxinv``, so the
package itself is made callable with the same signature (``jaxinv.api.preprocess``).
"""
import sys
import types


class _CallablePackage(types.ModuleType):

  def __call__(self, image, **kwargs):
    """``jaxinv.preprocess(image, ...)``: see ``jaxinv.api.preprocess``."""
    from jaxinv.preprocess import pipeline
    return pipeline.preprocess(image, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
