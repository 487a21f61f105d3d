fn main() {
    // Only the napi binding needs Node's linker setup; the pure core builds without it.
    if std::env::var_os("CARGO_FEATURE_NAPI").is_some() {
        napi_build::setup();
    }
}
