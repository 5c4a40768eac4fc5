//! MPI for the cluster store: initialised here with `MPI_THREAD_MULTIPLE`, or joined when
//! the caller (mpi4py, a solver) initialised it already.

use std::sync::{Arc, Mutex, Weak};

use cascade_core::{Error, ErrorKind, Result};
use mpi::Threading;
use mpi::environment::Universe;

/// A handle on MPI, shared by every cluster store of the process.
///
/// When this crate initialised MPI, `MPI_Finalize` runs when the last handle is dropped
/// (MPI cannot be initialised again afterwards: open every store before that, or keep a
/// handle for the life of the program). When the caller initialised MPI, the caller
/// finalizes it too.
#[derive(Clone)]
pub struct Mpi {
    inner: Arc<Inner>,
}

struct Inner {
    /// Present when this crate called `MPI_Init_thread`; dropping it finalizes MPI.
    _universe: Option<Universe>,
    rank: i32,
    size: i32,
    library: String,
}

static CURRENT: Mutex<Weak<Inner>> = Mutex::new(Weak::new());

impl Mpi {
    /// Initialises MPI with `MPI_THREAD_MULTIPLE`, or joins an MPI already initialised
    /// (it must provide `MPI_THREAD_MULTIPLE` too). Returns the same handle to every
    /// caller while one is alive.
    ///
    /// Errors: `Unavailable` when the library provides a lower thread level (with Cray
    /// MPICH, set `MPICH_MAX_THREAD_SAFETY=multiple`) or MPI was finalized already.
    pub fn init() -> Result<Self> {
        let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = current.upgrade() {
            return Ok(Self { inner });
        }
        if mpi::environment::is_finalized() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "MPI was finalized already and cannot be initialised again in this process",
            ));
        }
        let universe = match mpi::initialize_with_threading(Threading::Multiple) {
            Some((universe, provided)) => {
                if provided < Threading::Multiple {
                    return Err(thread_level_error(provided));
                }
                Some(universe)
            }
            None => {
                let provided = mpi::environment::threading_support();
                if provided < Threading::Multiple {
                    return Err(thread_level_error(provided));
                }
                None
            }
        };
        let world = mpi::topology::SimpleCommunicator::world();
        use mpi::topology::Communicator;
        let inner = Arc::new(Inner {
            rank: world.rank(),
            size: world.size(),
            // Some libraries (MPICH) count the C string's NUL in the version's length.
            library: mpi::environment::library_version()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string(),
            _universe: universe,
        });
        *current = Arc::downgrade(&inner);
        Ok(Self { inner })
    }

    /// This process's rank in `MPI_COMM_WORLD`.
    pub fn rank(&self) -> usize {
        usize::try_from(self.inner.rank).unwrap_or(0)
    }

    /// How many ranks `MPI_COMM_WORLD` has.
    pub fn size(&self) -> usize {
        usize::try_from(self.inner.size).unwrap_or(1)
    }

    /// The MPI library's version line (`Open MPI v4.1.4, ...`, `MPICH Version: 4.0`).
    pub fn library(&self) -> &str {
        &self.inner.library
    }

    /// MPI's wall clock in seconds (`MPI_Wtime`).
    pub fn wtime(&self) -> f64 {
        mpi::time()
    }
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.inner.rank)
            .field("size", &self.inner.size)
            .field("library", &self.inner.library)
            .finish()
    }
}

fn thread_level_error(provided: Threading) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the MPI library does not provide MPI_THREAD_MULTIPLE, which the cluster store's \
         progress thread needs (Cray MPICH: export MPICH_MAX_THREAD_SAFETY=multiple; \
         mpi4py: initialise with mpi4py.rc.thread_level = \"multiple\")",
    )
    .with_context("provided", format!("{provided:?}"))
}

/// Whether MPI was finalized (communicators must not be freed after that).
pub(crate) fn finalized() -> bool {
    mpi::environment::is_finalized()
}
