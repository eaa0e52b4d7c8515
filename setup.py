"""Packaging for eventtracking-segment: a drop-in eventtracking with a fast Segment backend."""

from setuptools import find_packages, setup

setup(
    name="eventtracking-segment",
    version="0.1.0",
    description=(
        "Event tracking for Python apps (API-compatible with Open edX event-tracking) "
        "with a fast, lossless Segment backend."
    ),
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    packages=find_packages(include=["eventtracking", "eventtracking.*"]),
    python_requires=">=3.9",
    install_requires=[
        "orjson>=3.9",
        "urllib3>=1.26",
        "tqdm>=4.60",
    ],
    extras_require={
        "django": ["Django>=3.2"],
        "segment": ["segment-analytics-python>=2.2"],
        "test": [
            "pytest>=7",
            "pytest-timeout>=2.1",
            "hypothesis>=6",
            "ruff>=0.4",
            "Django>=3.2",
            "segment-analytics-python>=2.2",
        ],
    },
    entry_points={"console_scripts": ["eventtracking = eventtracking.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Framework :: Django",
    ],
)
