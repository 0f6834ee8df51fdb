"""Builds the compiled twins (Cython) when pip installs membench from source; everything else is in pyproject.toml."""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

TWINS = ["membench.analyze._connections", "membench.analyze._series", "membench.analyze._stack",
         "membench.record._core", "membench.replay._keys",
         "membench.replay._pass_plan", "membench.replay._seen"]

setup(
    ext_modules=cythonize(
        [Extension(name, [f"src/{name.replace('.', '/')}.pyx"], include_dirs=[numpy.get_include()],
                   define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]) for name in TWINS],
        compiler_directives={"language_level": 3},
    ),
)
