// Scratch tool for development measurements (not part of the product).
use wings_backup::engine::{archive_extract, ArchiveOptions};
use wings_backup::progress::Control;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opts = ArchiveOptions::from_json(args.get(3).map(|s| s.as_str())).unwrap();
    let t = std::time::Instant::now();
    let r = archive_extract(std::path::Path::new(&args[1]), std::path::Path::new(&args[2]), &opts, &mut Control::none());
    eprintln!("{:?} {:?}", t.elapsed(), r);
}
