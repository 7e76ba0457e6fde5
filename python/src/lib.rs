//! `quiver._quiver`: the Python extension over the quiver library.
//!
//! A thin layer: every read, write and check is the library's; this crate only converts
//! arguments, releases the GIL while the library works, and hands Arrow data over through the
//! Arrow PyCapsule interface (no copy). The pure-Python package `quiver` re-exports it.

mod convert;
mod errors;
mod reader;
mod store;
mod stream;
mod table;

use std::sync::LazyLock;

use pyo3::prelude::*;

/// The extension's Rust allocations go through mimalloc, as the quiver binary's: large reads
/// reuse freed memory instead of faulting fresh pages in (see docs/BENCHMARKS.md, W14). Arrow data
/// handed to Python is released through its own callback, back into this allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One runtime for every call: reads run on the calling thread (`block_on`), parallel decodes
/// and database connections on its workers.
pub(crate) static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("quiver")
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
});

/// Runs a library future with the GIL released.
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    fut: impl std::future::Future<Output = quiver::Result<T>> + Send,
) -> PyResult<T> {
    py.detach(|| RUNTIME.block_on(fut)).map_err(errors::to_py)
}

#[pymodule]
fn _quiver(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<reader::Reader>()?;
    m.add_class::<store::Store>()?;
    m.add_class::<table::Table>()?;
    m.add_class::<stream::PyBarStream>()?;
    m.add_function(wrap_pyfunction!(store::sync, m)?)?;
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
