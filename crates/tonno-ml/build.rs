//! With the `torch` feature, tonno-ml's own test binaries find libtorch
//! without LD_LIBRARY_PATH: an rpath to the folder torch-sys linked against.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
