"""Data: image and raster reading (:mod:`rsvit.data.io`) and one package per task family.

``classification``, ``segmentation``, ``change``, ``regression`` and ``detection`` each hold their
datasets, transforms and file tools. The flat module paths of earlier releases (``rsvit.data.scene``,
``rsvit.data.seg_datasets``, ``rsvit.data.dota`` ...) still import, with a deprecation warning.
"""

from rsvit.data import _moved

_moved.install()
