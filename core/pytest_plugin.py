"""The pytest plugin ragloom installs (entry point ``pytest11``): rewrites the asserts of the
contract suites so their failures show values."""

import pytest

pytest.register_assert_rewrite("ragloom.testing")
