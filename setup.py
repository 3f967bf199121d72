"""netlens: what a neural network sees and why it decides."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
version = {}
exec((ROOT / "netlens" / "_version.py").read_text(), version)

setup(
    name="netlens",
    version=version["__version__"],
    description="Attribution maps, CAMs, occlusion, feature visualization, deep dream and style "
                "transfer for any torchvision-style PyTorch model",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["netlens", "netlens.*"]),
    py_modules=["_netlens_cli"],  # the console script's Ctrl-C guard around importing netlens
    package_data={"netlens": ["resources/*.txt", "resources/*.json", "resources/examples/*.jpg",
                              "weights/*.pt", "*.pyi", "py.typed"]},
    include_package_data=True,
    entry_points={"console_scripts": ["netlens = _netlens_cli:main"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.23",
        "matplotlib>=3.6",
        "pillow>=9.0",
        "pyimgy>=0.1.0",
        "tqdm>=4.60",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "ruff>=0.4", "nbformat>=5.7", "nbclient>=0.7", "ipykernel>=6.0",
                "captum>=0.7", "grad-cam>=1.5", "mypy>=1.10", "jupytext>=1.16", "mkdocs>=1.6",
                "mkdocs-material>=9.5", "mkdocstrings[python]>=0.25", "mkdocs-jupyter>=0.24",
                "playwright>=1.40"],
        # superpixels for the black-box methods (netlens.segments.slic, quickshift, felzenszwalb)
        "segments": ["scikit-image>=0.19"],
    },
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
