//! The progress bars of the long commands (`reembed`, `export`, `import`,
//! `prune`): counts, rate and time left on standard error when it is a
//! terminal; hidden otherwise (each command prints a line instead).

/// A bar counting messages out of a known total (`{pos}/{len}`), with the
/// rate and the time left.
pub const MESSAGES: &str = "{bar:40} {pos}/{len} messages, {per_sec}, eta {eta}";

/// [`MESSAGES`] with the bar's message after the count (what else was done,
/// such as threads).
pub const MESSAGES_AND: &str = "{bar:40} {pos}/{len} messages, {msg}, {per_sec}, eta {eta}";

/// A bar counting bytes read of a file, with what was done as its message.
pub const BYTES: &str = "{bar:40} {bytes}/{total_bytes}, {msg}, {bytes_per_sec}, eta {eta}";

/// A bar of `len` steps (`None`: a total not known yet, set later with
/// `set_length`) drawn with `template`.
#[must_use]
pub fn bar(len: Option<u64>, template: &str) -> indicatif::ProgressBar {
    let bar = len.map_or_else(indicatif::ProgressBar::no_length, indicatif::ProgressBar::new);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Moves `bar` to `done`, stretching its length when `done` passes it (the
/// total was an estimate).
pub fn advance_to(bar: &indicatif::ProgressBar, done: u64) {
    if done > bar.length().unwrap_or(0) {
        bar.set_length(done);
    }
    bar.set_position(done);
}
