"""Build the compiled kernels of ``labkit.speedups`` (everything else is in pyproject.toml).

Each extension is optional: where no C compiler or Python headers are present the install
still succeeds, the pure-Python twins run instead, and ``labkit doctor`` says why.
``pip install -e .`` builds them in place, next to their ``.pyx`` sources.
"""

from setuptools import Extension, setup

from Cython.Build import cythonize

SPEEDUPS = "labkit/speedups"
extensions = [
    Extension("labkit.speedups._feedscore", [f"{SPEEDUPS}/_feedscore.pyx"],
              extra_compile_args=["-O2"]),
    # The same kernel in hand-written C, reached through Cython's `cdef extern from`.
    Extension("labkit.speedups._feedscore_c", [f"{SPEEDUPS}/_feedscore_c.pyx",
                                               f"{SPEEDUPS}/feedscore.c"],
              include_dirs=[SPEEDUPS], extra_compile_args=["-O2"]),
]

ext_modules = cythonize(extensions, language_level=3, quiet=True)
for ext in ext_modules:  # cythonize makes new Extension objects and drops `optional`
    ext.optional = True
setup(ext_modules=ext_modules)
