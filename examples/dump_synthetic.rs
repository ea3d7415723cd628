//! Writes synthetic images as raw bytes (for looking at them): `dump_synthetic N SEED OUT`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args[1].parse().unwrap();
    let seed: u64 = args[2].parse().unwrap();
    let set = cnnsplitter::data::synthetic::generate(n, seed);
    std::fs::write(&args[3], &set.pixels).unwrap();
}
