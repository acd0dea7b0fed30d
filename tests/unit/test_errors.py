"""One user-facing error type: every "bad input" error is an ``InputError``."""

import pytest

from aniso_nequip.data.mp import DocumentError
from aniso_nequip.errors import InputError
from aniso_nequip.inference import ModelLoadError
from aniso_nequip.io import OutputExistsError, atomic_file
from aniso_nequip.screen.runner import ShardsMissingError
from aniso_nequip.sweep import SpecError


@pytest.mark.parametrize(
    "error", [OutputExistsError, DocumentError, ModelLoadError, SpecError, ShardsMissingError]
)
def test_specific_errors_are_input_errors(error):
    assert issubclass(error, InputError) and issubclass(error, ValueError)


def test_an_existing_output_is_a_file_exists_and_an_input_error(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("mine")
    with pytest.raises(FileExistsError) as err, atomic_file(path):
        pass
    assert isinstance(err.value, InputError) and path.read_text() == "mine"
