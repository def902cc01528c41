"""Training tests share a persistent XLA compilation cache: identical train steps compile once."""

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache


@pytest.fixture(scope="session")
def compilation_cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "jax_compilation_cache"


@pytest.fixture(autouse=True, scope="module")
def persistent_compilation_cache(compilation_cache_dir):
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.set_cache_dir(str(compilation_cache_dir))
    compilation_cache.reset_cache()
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
