//! With the `torch` feature, the `tonno` binary finds libtorch without
//! LD_LIBRARY_PATH: an rpath to the folder torch-sys linked against (the
//! `torch/lib` of the Python environment it was built in).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
