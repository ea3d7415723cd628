//! The ONNX Runtime engine: models are exported to ONNX in memory and run by a dynamically
//! loaded `libonnxruntime` (graph optimisation level "all"). Sessions allocate from one
//! process-wide memory arena and run on one process-wide pool of the compute threads, or, when
//! several run at once ([`Engine::concurrent`]), each on its share of the threads.
//!
//! The runtime library is found through `ORT_DYLIB_PATH`, else in the `onnxruntime` package of
//! the `python3` on `PATH` (`pip install onnxruntime`). It is loaded once per process.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use crate::decode::pad_channels;
use crate::engine::phases::{Phase, PhaseClock};
use crate::engine::{Engine, PreparedModel};
use crate::error::{Error, Result};
use crate::export::onnx::{to_onnx, to_onnx_packed};
use crate::model::Model;

/// Channel groups are widened to a multiple of this with inert channels before a model runs
/// (see [`pad_channels`]): ONNX Runtime's blocked convolutions run about twice as fast then.
pub const CHANNEL_MULTIPLE: usize = 8;

/// Environment variable naming the ONNX Runtime library file.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

static ENVIRONMENT: OnceLock<std::result::Result<(Environment, PathBuf), String>> = OnceLock::new();

/// Intra-op threads of the process-wide ONNX Runtime thread pool (set before the first load).
static THREADS: OnceLock<usize> = OnceLock::new();

/// Where the ONNX Runtime library is: `$ORT_DYLIB_PATH`, else the `onnxruntime` package of the
/// `python3` on `PATH`. The error says what was tried.
pub fn find_library() -> std::result::Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(DYLIB_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("{DYLIB_ENV}={} is not a file", path.display())) };
    }
    let script =
        "import importlib.util as u, os\ns = u.find_spec('onnxruntime')\nprint(os.path.dirname(s.origin) if s else '')";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .map_err(|_| format!("{DYLIB_ENV} is not set and there is no python3 on PATH"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if dir.is_empty() {
        return Err(format!("{DYLIB_ENV} is not set and python3 has no onnxruntime package"));
    }
    library_in(&Path::new(&dir).join("capi"))
        .ok_or_else(|| format!("the onnxruntime package in {dir} holds no libonnxruntime library"))
}

/// The runtime library file in a folder (`libonnxruntime.so.1.x.y`, `.dylib` or `onnxruntime.dll`).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name.starts_with("libonnxruntime.so") || name.starts_with("libonnxruntime.") && name.ends_with(".dylib"))
                && !name.contains("providers")
                || name == "onnxruntime.dll"
        })
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

/// Loads the runtime once; later calls return the same result. All sessions share one thread
/// pool (so creating a session does not start threads) of the compute thread count, and one
/// memory arena (see [`register_shared_arena`]).
pub fn environment() -> std::result::Result<&'static Environment, String> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = find_library()?;
        let builder = ort::init_from(&path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        let fail = |e: ort::Error| format!("cannot start ONNX Runtime from {}: {e}", path.display());
        let threads = *THREADS.get_or_init(rayon::current_num_threads);
        let pool = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(threads)
            .and_then(|p| p.with_inter_threads(1))
            .map_err(fail)?;
        let env = builder.with_name("cnnsplitter").with_global_thread_pool(pool).build().map_err(fail)?;
        // ONNX Runtime's own log lines (coloured, before ours) would repeat the errors this tool
        // reports; `ORT_LOG=warning` (or info, verbose) shows them again.
        if std::env::var_os("ORT_LOG").is_none() {
            env.set_log_level(ort::logging::LogLevel::Fatal);
        }
        register_shared_arena(&env).map_err(|e| format!("cannot register ONNX Runtime's shared memory arena: {e}"))?;
        Ok((env, path))
    });
    loaded.as_ref().map(|(env, _)| env).map_err(Clone::clone)
}

/// Registers one CPU arena allocator with the environment, for every session to allocate from
/// (sessions opt in with `session.use_env_allocators`): memory returned by one session's run
/// serves the next session's, instead of each session mapping (and the kernel zeroing) fresh pages.
fn register_shared_arena(env: &Environment) -> std::result::Result<(), String> {
    use ort::AsPointer;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)
        .map_err(|e| e.to_string())?;
    let api = ort::api();
    // SAFETY: both pointers come from live `ort` objects; a null arena configuration asks for
    // ONNX Runtime's defaults. The returned status is read and released here.
    unsafe {
        let status = (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), std::ptr::null());
        if !status.0.is_null() {
            let message = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned();
            (api.ReleaseStatus)(status.0);
            return Err(message);
        }
    }
    Ok(())
}

/// The library file in use, once [`environment`] succeeded.
pub fn library_path() -> Option<&'static Path> {
    ENVIRONMENT.get().and_then(|r| r.as_ref().ok()).map(|(_, p)| p.as_path())
}

/// Runs models with ONNX Runtime.
#[derive(Debug, Clone)]
pub struct OrtEngine {
    threads: usize,
    /// `Some(t)`: each session runs on its own `t` threads (the caller's thread among them; with
    /// `t = 1` no thread is started), for several sessions running at once. `None`: the shared
    /// pool of `threads`.
    session_threads: Option<usize>,
}

impl OrtEngine {
    /// The engine with `threads` intra-op threads (the first engine of a process decides the
    /// shared pool's size); fails, with the reason, when no runtime loads.
    pub fn new(threads: usize) -> Result<Self> {
        let _ = THREADS.set(threads.max(1));
        environment().map_err(|e| Error::Engine(format!("ONNX Runtime is not available: {e}")))?;
        Ok(OrtEngine { threads: threads.max(1), session_threads: None })
    }

    /// Intra-op threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A session for ONNX bytes.
    pub fn session(&self, onnx: &[u8]) -> Result<Session> {
        let env = environment().map_err(Error::Engine)?;
        let fail = |e: ort::Error| Error::Engine(format!("ONNX Runtime: {e}"));
        let recover = |e: ort::Error<ort::session::builder::SessionBuilder>| fail(e.into());
        let builder = Session::builder(env).map_err(fail)?;
        let builder = builder.with_optimization_level(GraphOptimizationLevel::All).map_err(recover)?;
        let mut builder = builder.with_config_entry("session.use_env_allocators", "1").map_err(recover)?;
        if let Some(t) = self.session_threads {
            builder = builder.with_independent_thread_pool().map_err(recover)?;
            builder = builder.with_intra_threads(t).map_err(recover)?;
            builder = builder.with_inter_threads(1).map_err(recover)?;
        }
        builder.commit_from_memory(onnx).map_err(fail)
    }
}

impl Engine for OrtEngine {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn prepare(&self, model: &Model) -> Result<Box<dyn PreparedModel>> {
        self.prepare_timed(model, &PhaseClock::default())
    }

    fn prepare_timed(&self, model: &Model, clock: &PhaseClock) -> Result<Box<dyn PreparedModel>> {
        let onnx = clock.time(Phase::Export, || to_onnx(&pad_channels(model, CHANNEL_MULTIPLE)?))?;
        let session = clock.time(Phase::Session, || self.session(&onnx))?;
        Ok(Box::new(OrtModel::new(session, model.description.input, model.description.classes)))
    }

    /// With `jobs > 1`, sessions get independent pools of `threads / jobs` threads.
    fn concurrent(&self, jobs: usize) -> Box<dyn Engine> {
        let session_threads = (jobs > 1).then(|| (self.threads / jobs).max(1));
        Box::new(OrtEngine { threads: self.threads, session_threads })
    }

    /// Measured: one small module per thread over batches of 32 beats one on all threads.
    fn small_models_per_thread(&self) -> bool {
        true
    }

    /// One session for all models (see [`to_onnx_packed`]).
    fn prepare_many(&self, models: &[Model]) -> Result<Box<dyn PreparedModel>> {
        let padded = models.iter().map(|m| pad_channels(m, CHANNEL_MULTIPLE)).collect::<Result<Vec<_>>>()?;
        let session = self.session(&to_onnx_packed(&padded)?)?;
        let input = models.first().map(|m| m.description.input).unwrap_or_default();
        let classes = models.iter().map(|m| m.description.classes).sum();
        Ok(Box::new(OrtModel::new(session, input, classes)))
    }
}

/// A session with the shape it expects.
pub struct OrtModel {
    session: Mutex<Session>,
    input: [usize; 3],
    classes: usize,
}

impl OrtModel {
    /// Wraps a session whose graph maps `[batch, C, H, W]` to `[batch, classes]`.
    pub fn new(session: Session, input: [usize; 3], classes: usize) -> Self {
        OrtModel { session: Mutex::new(session), input, classes }
    }
}

impl PreparedModel for OrtModel {
    fn logits(&self, images: &[f32], n: usize, batch: usize) -> Result<Vec<f32>> {
        let per: usize = self.input.iter().product();
        if images.len() != n * per {
            return Err(Error::Invalid(format!(
                "{n} images of shape {:?} need {} values, got {}",
                self.input,
                n * per,
                images.len()
            )));
        }
        let fail = |e: ort::Error| Error::Engine(format!("ONNX Runtime: {e}"));
        let mut session = self.session.lock().expect("session lock");
        let mut out = Vec::with_capacity(n * self.classes);
        let [c, h, w] = self.input;
        for start in (0..n).step_by(batch.max(1)) {
            let m = batch.max(1).min(n - start);
            let view =
                TensorRef::from_array_view(([m, c, h, w], &images[start * per..(start + m) * per])).map_err(fail)?;
            let outputs = session.run(ort::inputs![view]).map_err(fail)?;
            let (_, logits) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
            out.extend_from_slice(logits);
        }
        Ok(out)
    }

    fn classes(&self) -> usize {
        self.classes
    }
}
