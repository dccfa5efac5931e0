"""Build hook for the one optional C extension; all other metadata lives in pyproject.toml.

``recpack._jpegregion`` decodes only the part of a JPEG a crop needs (libjpeg-turbo's jpeg_crop_scanline and
jpeg_skip_scanlines). It needs a C compiler and the libjpeg-turbo headers (Debian/Ubuntu: ``apt-get install
libjpeg-dev``; macOS: ``brew install jpeg-turbo``). Where either is missing the build of this extension is
skipped (``optional=True``) and recpack decodes whole images instead: same results, slower train crops.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("recpack._jpegregion", ["recpack/_jpegregion.c"], libraries=["jpeg"], optional=True,
                  extra_compile_args=["-O2"]),
    ],
)
