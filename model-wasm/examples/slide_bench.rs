//! Slide reading and tiling speed and memory, natively (`tests/slides/bench.sh` runs it).
//!
//!     cargo run -p model-wasm --example slide_bench -- SLIDE [MODEL_DIR] [PATCHES]
//!
//! Prints: open time and bytes read by it; the tissue mask and patch plan (overview read and
//! time); patches/s for reading alone (read + decode + resize to the model's input) over the
//! first PATCHES patches (default 20,000); with MODEL_DIR, patches/s for reading + embedding on
//! the CPU over PATCHES/10; the bytes read per patch; and the process's peak resident memory.

use std::time::Instant;

use model_wasm::slide::{self, DiskFile, Slide, TilingOptions};
use model_wasm::{BackendChoice, Clip};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::Path::new(args.get(1).expect("usage: slide_bench SLIDE [MODEL_DIR] [PATCHES]"));
    let model = args.get(2).filter(|m| !m.is_empty());
    let limit: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);

    let clip = model.map(|m| pollster::block_on(Clip::load_dir(m.as_ref(), BackendChoice::Cpu)).expect("model"));
    let patch = clip.as_ref().map_or(224, Clip::input_size);
    let rss_model = peak_rss_mb();

    let t = Instant::now();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let s = Slide::open(&name, DiskFile::open(path).expect("open")).expect("slide");
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let l0 = &s.levels[0];
    println!(
        "slide {name}: {:.2} GB, {}x{} px, {} levels, {}x{} tiles; opened in {open_ms:.1} ms reading {} bytes of tiles",
        size as f64 / 1e9,
        l0.width,
        l0.height,
        s.levels.len(),
        l0.tiles_across(),
        l0.tiles_down(),
        s.bytes_read()
    );

    let t = Instant::now();
    let options = TilingOptions { patch, ..Default::default() };
    let (_, mask, plan) = slide::prepare(&s, &options).expect("prepare");
    println!(
        "tissue {:.1}% (threshold {}), {} patches of {} positions at {} µm/px from level {} ({} px squares): planned in {:.2} s, {:.1} MB read",
        100.0 * mask.coverage(),
        mask.threshold,
        plan.patches.len(),
        plan.candidates,
        options.target_mpp,
        plan.level,
        plan.read_size,
        t.elapsed().as_secs_f64(),
        s.bytes_read() as f64 / 1e6
    );

    let before = s.bytes_read();
    let n = limit.min(plan.patches.len());
    let t = Instant::now();
    let mut checksum = 0u64;
    for p in &plan.patches[..n] {
        let rgb = plan.read(&s, p).expect("patch");
        checksum = checksum.wrapping_add(rgb.data[rgb.data.len() / 2] as u64);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "reading {n} patches ({patch} px): {:.0} patches/s, {:.1} KB read per patch (checksum {checksum})",
        n as f64 / secs,
        (s.bytes_read() - before) as f64 / n.max(1) as f64 / 1e3
    );

    if let Some(clip) = &clip {
        let m = (limit / 10).min(plan.patches.len()).max(1);
        let t = Instant::now();
        for chunk in plan.patches[..m].chunks(8) {
            let pixels: Vec<_> = chunk.iter().map(|p| clip.pixels_of(&plan.read(&s, p).unwrap())).collect();
            pollster::block_on(clip.embed_images(&pixels)).expect("embed");
        }
        let secs = t.elapsed().as_secs_f64();
        println!("reading + embedding {m} patches on the CPU ({}): {:.1} patches/s", model.unwrap(), m as f64 / secs);
    }
    println!("peak resident memory {:.0} MB (of which {rss_model:.0} MB before the slide was opened)", peak_rss_mb());
}
