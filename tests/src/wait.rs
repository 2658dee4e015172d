//! Polling for something that happens in another process (a server's counter, egret's
//! kernel state) until it holds or time runs out.

use anyhow::Result;
use std::time::{Duration, Instant};

/// How often [`wait_until`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `condition` until it holds (`Ok(true)`) or `timeout` passes (`Ok(false)`); it is asked
/// once more at the deadline, so a slow last poll is not lost. An error from `condition` ends
/// the wait at once.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition()? {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
