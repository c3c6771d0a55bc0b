//! The S3 client: uploads an archive file through the presigned UploadPart
//! URLs the Panel hands out (docs/api.md sections 6.2 and 7).
//!
//! Parts go up several at once (bounded by `upload_concurrency` and the
//! Panel's `max_concurrent_uploads`). Each attempt reads its part from the
//! part's own offset in the file, so a retry resends exactly the right
//! bytes. Any 2xx is success and the `ETag` header is kept verbatim; 5xx
//! and transport errors are retried with backoff, any other status fails the
//! upload at once with the provider's status and error text.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::panel::{excerpt, redact, UploadPlan};
use crate::progress::{Control, Counters, Phase, Shared};
use crate::retry::Backoff;

/// How long one part keeps being retried.
const PART_RETRY_BUDGET: Duration = Duration::from_secs(120);

/// Uploads `size` bytes of `file` as the plan's parts; returns `(etag,
/// part_number)` in part order. Progress (phase `Upload`) counts archive
/// bytes sent, each byte once even when a part is retried.
pub fn upload_parts(
    file: &File,
    size: u64,
    plan: &UploadPlan,
    concurrency: usize,
    ctl: &mut Control<'_>,
) -> Result<Vec<(String, u32)>> {
    let count = size.div_ceil(plan.part_size);
    if plan.parts.len() as u64 != count {
        return Err(Error::remote(format!(
            "the Panel handed out {} part URLs for {count} parts of {} bytes",
            plan.parts.len(),
            plan.part_size
        )));
    }
    let workers = concurrency
        .min(plan.max_concurrent.unwrap_or(usize::MAX))
        .min(plan.parts.len())
        .max(1);
    let counters = Counters::default();
    counters.set_total(size);
    let shared = Shared::default();
    let next = AtomicUsize::new(0);
    let sent: Vec<AtomicU64> = (0..plan.parts.len()).map(|_| AtomicU64::new(0)).collect();
    let etags: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; plan.parts.len()]);
    let done = AtomicUsize::new(0);
    let agent = part_agent();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let job = PartJob {
                    file,
                    size,
                    plan,
                    agent: &agent,
                    counters: &counters,
                    sent: &sent,
                    shared: &shared,
                };
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= plan.parts.len() || shared.should_stop() {
                        return;
                    }
                    match job.upload(i) {
                        Ok(etag) => {
                            if let Ok(mut e) = etags.lock() {
                                e[i] = Some(etag);
                            }
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            shared.fail(e);
                            return;
                        }
                    }
                }
            });
        }
        // The calling thread reports progress and watches for cancellation.
        while done.load(Ordering::SeqCst) < plan.parts.len() && !shared.should_stop() {
            if let Err(e) = ctl.tick(Phase::Upload, &counters) {
                shared.fail(e);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    if let Some(e) = shared.take_error() {
        return Err(e);
    }
    ctl.report(crate::progress::snapshot(Phase::Upload, &counters))?;
    let etags = etags.into_inner().unwrap_or_default();
    etags
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            e.map(|etag| (etag, i as u32 + 1))
                .ok_or_else(|| Error::internal("an uploaded part has no result"))
        })
        .collect()
}

fn part_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(300)))
        .timeout_per_write(Some(Duration::from_secs(120)))
        .user_agent(concat!("wings-backup/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

struct PartJob<'a> {
    file: &'a File,
    size: u64,
    plan: &'a UploadPlan,
    agent: &'a ureq::Agent,
    counters: &'a Counters,
    sent: &'a [AtomicU64],
    shared: &'a Shared,
}

impl PartJob<'_> {
    fn upload(&self, i: usize) -> Result<String> {
        let offset = i as u64 * self.plan.part_size;
        let len = self.plan.part_size.min(self.size - offset);
        let url = &self.plan.parts[i];
        let number = i + 1;
        let mut backoff = Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(10),
            PART_RETRY_BUDGET,
        );
        let stop = || self.shared.should_stop();
        loop {
            let mut reader = PartReader {
                file: self.file,
                offset,
                pos: 0,
                len,
                job: self,
                part: i,
            };
            let result = self
                .agent
                .put(url)
                .header("Content-Length", len.to_string())
                .header("Content-Type", "application/x-gzip")
                .send(ureq::SendBody::from_reader(&mut reader));
            let reason = match result {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) {
                        // Recorded verbatim; without one the Panel could
                        // not complete the upload, so the backup fails now.
                        return match response.headers().get("etag") {
                            Some(v) if !v.as_bytes().is_empty() => {
                                Ok(String::from_utf8_lossy(v.as_bytes()).into_owned())
                            }
                            _ => Err(Error::remote(format!(
                                "S3 answered HTTP {status} for part {number} without an ETag"
                            ))),
                        };
                    }
                    let mut text = String::new();
                    let _ = response
                        .body_mut()
                        .as_reader()
                        .take(4096)
                        .read_to_string(&mut text);
                    let message = format!(
                        "S3 answered HTTP {status} for part {number}: {}",
                        excerpt(&text)
                    );
                    if status < 500 {
                        return Err(Error::remote(message));
                    }
                    message
                }
                Err(e) => {
                    if stop() {
                        return Err(Error::cancelled());
                    }
                    format!("uploading part {number} to {}: {e}", redact(url))
                }
            };
            if !backoff.wait(&stop) {
                if stop() {
                    return Err(Error::cancelled());
                }
                return Err(Error::remote(format!(
                    "{reason} (gave up after {} attempts)",
                    backoff.attempts()
                )));
            }
        }
    }
}

/// A part's bytes, read from the part's own offset (`pread`), so every
/// attempt sends the same bytes whatever else reads the file.
struct PartReader<'a> {
    file: &'a File,
    offset: u64,
    pos: u64,
    len: u64,
    job: &'a PartJob<'a>,
    part: usize,
}

impl Read for PartReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.job.shared.should_stop() {
            return Err(std::io::Error::other("the upload was stopped"));
        }
        let want = (self.len - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self
            .file
            .read_at(&mut buf[..want], self.offset + self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the archive file is shorter than expected",
            ));
        }
        self.pos += n as u64;
        // Count each byte once: only what goes beyond this part's best attempt.
        let best = &self.job.sent[self.part];
        let previous = best.fetch_max(self.pos, Ordering::SeqCst);
        if self.pos > previous {
            self.job.counters.add_bytes(self.pos - previous);
        }
        Ok(n)
    }
}
