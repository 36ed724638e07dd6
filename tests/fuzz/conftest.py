"""The fuzz targets share tests/runtime's compiled "abi_model"."""

from tests.runtime.conftest import abi_library  # noqa: F401
