//! Compiles cuda/ twice. Always: every kernel file, plus the emulator runtime (cuda/emu/) and the
//! emulator-only test kernels (cuda/tests/), as C++ into a static library, so that `cargo test` runs the
//! kernels on the CPU. When nvcc is found (`NVCC`, then `$CUDA_HOME/bin/nvcc`, `$CUDA_PATH/bin/nvcc`,
//! then `PATH`): every `cuda/*.cu` into one fatbin (SASS for each arch in `CUDA_ARCHS`, default
//! "80;90", plus PTX for the newest), embedded in the library under `cfg(longlora_cuda_kernels)`.
//! `LONGLORA_PTXAS_REPORT=1` prints ptxas's register / shared-memory / spill report as build warnings.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda = root.join("cuda");
    println!("cargo:rerun-if-changed=cuda");
    println!("cargo::rustc-check-cfg=cfg(longlora_cuda_kernels)");

    let kernels = files_with_extension(&cuda, "cu");
    build_emulator(&cuda, &kernels);
    if let Some(nvcc) = find_nvcc() {
        build_fatbin(&nvcc, &cuda, &kernels, &out_dir);
        println!("cargo:rustc-cfg=longlora_cuda_kernels");
    }
}

/// The files in `dir` ending in `.extension`, sorted so that builds are reproducible.
fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("reading a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    files
}

/// The kernels compiled as C++ against cuda/emu/ (the `.cu` extension needs `-x c++`). The library
/// uses nothing from libstdc++ (no exceptions, RTTI, iostreams or containers), so no C++ runtime is
/// linked and executables carried to another machine need none.
fn build_emulator(cuda: &Path, kernels: &[PathBuf]) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .cpp_link_stdlib(None)
        .std("c++17")
        // The emulator runs every test kernel; it is slow without optimisation even in debug builds.
        .opt_level(3)
        .define("LONGLORA_EMU", None)
        .include(cuda.join("include"))
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .flag("-fno-exceptions")
        .flag("-fno-rtti")
        // The emulated mma defines its rounding as separate f32 multiplies and adds.
        .flag("-ffp-contract=off")
        .flag("-x")
        .flag("c++");
    build.files(files_with_extension(&cuda.join("emu"), "cpp"));
    build.files(kernels);
    build.files(files_with_extension(&cuda.join("tests"), "cu"));
    build.compile("longlora_emu");
}

fn find_nvcc() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=NVCC");
    if let Some(nvcc) = env::var_os("NVCC") {
        return Some(PathBuf::from(nvcc));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
        if let Some(home) = env::var_os(var) {
            let nvcc = Path::new(&home).join("bin").join("nvcc");
            if nvcc.is_file() {
                return Some(nvcc);
            }
        }
    }
    println!("cargo:rerun-if-env-changed=PATH");
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join("nvcc"))
        .find(|nvcc| nvcc.is_file())
}

/// `CUDA_ARCHS` ("80;90", commas also accepted) as compute capabilities.
fn cuda_archs() -> Vec<String> {
    println!("cargo:rerun-if-env-changed=CUDA_ARCHS");
    let archs = env::var("CUDA_ARCHS").unwrap_or_else(|_| "80;90".to_string());
    let archs: Vec<String> = archs
        .split([';', ','])
        .map(str::trim)
        .filter(|arch| !arch.is_empty())
        .map(str::to_string)
        .collect();
    assert!(
        !archs.is_empty()
            && archs
                .iter()
                .all(|arch| arch.bytes().all(|b| b.is_ascii_digit())),
        "CUDA_ARCHS must list compute capabilities such as \"80;90\""
    );
    archs
}

/// One fatbin from all kernel files, compiled as a single translation unit (so file-local names must
/// differ between kernel files; the emulator compiles each file alone, which catches missing includes).
fn build_fatbin(nvcc: &Path, cuda: &Path, kernels: &[PathBuf], out_dir: &Path) {
    println!("cargo:rerun-if-env-changed=LONGLORA_PTXAS_REPORT");
    let unity = out_dir.join("kernels.cu");
    let includes: String = kernels
        .iter()
        .map(|kernel| format!("#include \"{}\"\n", kernel.display()))
        .collect();
    fs::write(&unity, includes).unwrap_or_else(|e| panic!("writing {}: {e}", unity.display()));

    let archs = cuda_archs();
    let mut command = Command::new(nvcc);
    command
        .arg("-fatbin")
        .arg("-std=c++17")
        .arg("-I")
        .arg(cuda.join("include"))
        .args([
            "-Werror",
            "all-warnings",
            "-Xptxas",
            "-v,--warning-as-error",
        ]);
    for arch in &archs {
        command.arg(format!("-gencode=arch=compute_{arch},code=sm_{arch}"));
    }
    let newest = archs
        .iter()
        .max_by_key(|arch| arch.parse::<u32>().unwrap_or(0))
        .expect("archs is not empty");
    command.arg(format!(
        "-gencode=arch=compute_{newest},code=compute_{newest}"
    ));
    let fatbin = out_dir.join("kernels.fatbin");
    command.arg("-o").arg(&fatbin).arg(&unity);

    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", nvcc.display()));
    let report = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!("nvcc failed ({}): {command:?}\n{report}", output.status);
    }
    if env::var_os("LONGLORA_PTXAS_REPORT").is_some_and(|v| v == "1") {
        for line in report.lines().filter(|line| !line.trim().is_empty()) {
            println!("cargo:warning={}", line.trim_end());
        }
    }
}
