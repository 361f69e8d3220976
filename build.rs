//! Compiles the model-configuration schema (`config.pbtxt`) into a descriptor set that the
//! daemon embeds and checks text-format configurations against. Pure Rust: no protoc needed.

use prost::Message;

fn main() {
    // The console's built files are embedded: a new or changed file must rebuild the daemon.
    println!("cargo:rerun-if-changed=assets/console");
    let dir = "src/inference/model_config";
    let proto = format!("{dir}/model_config.proto");
    println!("cargo:rerun-if-changed={proto}");
    let files = match protox::compile([&proto], [dir]) {
        Ok(files) => files,
        Err(e) => panic!("cannot compile {proto}: {e}"),
    };
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let path = std::path::Path::new(&out).join("model_config.bin");
    if let Err(e) = std::fs::write(&path, files.encode_to_vec()) {
        panic!("cannot write {}: {e}", path.display());
    }
}
