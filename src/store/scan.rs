//! Parallel scans. Every instance is its own partition, so a listing, a
//! count or a purge by filter reads rows across the whole key space, and
//! one sequential scan waits for one page after another. A scan here starts
//! as that one sequential scan: a hub of one page costs one request. When
//! the first page shows that more follow, the rest of the key space is cut
//! into ranges that are read concurrently (at most `concurrency` pages in
//! flight), each range a sequential scan of its own.
//!
//! Where to cut is learned from the hub's own keys, with one-row probes
//! (`PartitionKey ge T`, `$top=1`, the key only, no metadata): a binary
//! search finds how long a prefix all the remaining keys share (`order-`,
//! `tenant-42^2Fjob-`, nothing for GUIDs), then probes at the next
//! position, one per character seen in the keys read so far, return the
//! real keys that start each branch. Those keys are the boundaries. Ranges
//! are cut again, a few rounds, until there are as many as slots, so a
//! skewed hub (most ids under one branch) splits too. A range still
//! reading while slots fall idle is cut again at its position: the rows of
//! listings and purges carry their keys, and a count, which reads no key to
//! save bytes, reads them on the pages of its long ranges once slots fall
//! idle.
//!
//! A boundary only decides how the work is shared, never what is read: the
//! ranges are contiguous, disjoint and cover the key range, and a range
//! whose end moved while one of its pages was in flight drops the rows at
//! or past its new end (the next range reads them). Rows come in no
//! particular order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use futures::FutureExt;
use tokio::sync::Semaphore;

use super::InstanceQuery;
use crate::error::Result;
use crate::format::columns::PARTITION_KEY;
use crate::format::filter::{InstanceFilter, KeyRange, KeyStart, MAX_COMPARISONS};
use crate::format::keys::{compare_keys, prefix_upper_bound};
use crate::format::row::{KeyRow, StoredRow};
use crate::model::ETag;
use crate::table::{Continuation, Page, PageRequest, ResponseFormat, TableClient};

/// A row with its ETag, as a page holds it.
pub(crate) type Row<R> = (R, Option<ETag>);

/// The most probes one cut sends at its branching position.
const MAX_PROBES: usize = 32;
/// Probes in flight for a cut of a running range (a plan's take the slots).
const RECUT_PROBES_IN_FLIGHT: usize = 8;
/// The pages one probe follows through empty pages before it gives up
/// (the service may answer a page with no row and a continuation).
const PROBE_PAGES: usize = 4;
/// Rounds of cutting before the scan starts.
const PLAN_ROUNDS: usize = 3;
/// Cuts of one running range, and of a whole scan per slot: probes are
/// cheap, but not free.
const SPLITS_PER_RANGE: u8 = 2;
const SPLITS_PER_SLOT: usize = 2;
/// The pages a running range is estimated to have left, at least, for a
/// cut to be worth its probes (a cut takes a few round trips before the
/// new ranges read anything).
const MIN_PAGES_LEFT_TO_CUT: f64 = 2.0;
/// Characters after the shared prefix that place a key within its range.
const PLACING_POSITIONS: usize = 6;
/// Keys of a page that teach the scan its characters: every n-th.
const ALPHABET_SAMPLE: usize = 16;
/// Where probes look before any key was read.
const DEFAULT_ALPHABET: &str = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// What a scan reads.
#[derive(Debug, Clone)]
pub(crate) struct ScanRequest {
    /// The filters, and the key range of its prefix.
    pub query: InstanceQuery,
    /// The columns to read; `None` for all. The key is added when needed.
    pub columns: Option<Vec<&'static str>>,
    /// Rows per page.
    pub page_size: u32,
    /// The response format (no ETags with [`ResponseFormat::NoMetadata`]).
    pub format: ResponseFormat,
}

/// Scans the rows `request` asks for, a page at a time, with at most
/// `concurrency` pages in flight; pages come in no particular order, each
/// holding only the rows the query keeps. The first error ends the stream.
pub(crate) fn scan<R: StoredRow>(
    client: TableClient,
    request: ScanRequest,
    concurrency: usize,
) -> impl Stream<Item = Result<Vec<Row<R>>>> + Send + 'static {
    let scanner = Scanner::<R>::new(client, request, concurrency);
    futures::stream::unfold(scanner, |mut scanner| async move {
        scanner.next_page().await.map(|page| (page, scanner))
    })
}

/// One range of a scan and where its reading stands.
#[derive(Debug)]
struct Range {
    /// Where the range starts and ends now (a cut moves its end).
    start: KeyStart,
    end: Option<String>,
    /// The range of the filter that `resume` belongs to.
    issued: KeyRange,
    resume: Option<Continuation>,
    /// The last key the range returned: it has returned every key up to it.
    last_key: Option<String>,
    /// Whether rows without their keys came after `last_key` (a count's
    /// pages before the scan's tail): where the range stands is unknown.
    stale: bool,
    /// Whether the page in flight, if any, reads no keys: rows past a moved
    /// end could not be told.
    keyless_in_flight: bool,
    pages: u32,
    /// The rows it has returned.
    rows: u64,
    splits: u8,
    done: bool,
}

impl Range {
    fn new(range: KeyRange) -> Range {
        Range {
            start: range.start.clone(),
            end: range.end.clone(),
            issued: range,
            resume: None,
            last_key: None,
            stale: false,
            keyless_in_flight: false,
            pages: 0,
            rows: 0,
            splits: 0,
            done: false,
        }
    }
}

enum Event<R> {
    Page {
        range: usize,
        page: Result<Page<R>>,
    },
    Plan {
        ranges: Vec<KeyRange>,
    },
    Split {
        range: usize,
        boundaries: Result<Vec<String>>,
    },
}

struct Scanner<R> {
    client: TableClient,
    request: ScanRequest,
    /// The columns of most pages, and of those that must carry the key:
    /// the first page (it says where the rest starts) and those of long
    /// ranges in the scan's tail (such a range can be cut at its position).
    select: Option<Vec<&'static str>>,
    keyed_select: Option<Vec<&'static str>>,
    /// Whether the rows of every page carry their key.
    keys_in_rows: bool,
    /// Whether slots have fallen idle since the plan: from then on the
    /// pages of long ranges read their keys.
    tail: bool,
    concurrency: usize,
    /// Whether the filter leaves room for a range's two conditions.
    splittable: bool,
    ranges: Vec<Range>,
    ready: VecDeque<usize>,
    in_flight: FuturesUnordered<BoxFuture<'static, Event<R>>>,
    pages_in_flight: usize,
    splitting: bool,
    splits: usize,
    /// Characters seen in the keys read so far: where probes look.
    alphabet: Alphabet,
    /// The highest key known to exist: where a range with no end is
    /// measured to.
    highest_key: Option<String>,
    failed: bool,
}

/// The characters seen in keys, position by position (the first
/// [`ALPHABET_POSITIONS`]), and in all: a probe at a position tries the
/// characters seen there.
#[derive(Debug, Clone, Default)]
struct Alphabet {
    at: Vec<BTreeSet<char>>,
    all: BTreeSet<char>,
}

/// Positions the alphabet tells apart.
const ALPHABET_POSITIONS: usize = 256;

impl Alphabet {
    fn learn(&mut self, key: &str) {
        for (position, c) in key.chars().enumerate() {
            self.all.insert(c);
            if position < ALPHABET_POSITIONS {
                if self.at.len() <= position {
                    self.at.resize_with(position + 1, BTreeSet::new);
                }
                self.at[position].insert(c);
            }
        }
    }

    /// The characters to try at `position`: those seen there or further
    /// on (the keys read first share their first characters, as they come
    /// in key order, while later positions show what varies), or seen
    /// anywhere, or, before any key was read, common ones.
    fn at(&self, position: usize) -> Vec<char> {
        let mut seen: BTreeSet<char> = self.at.iter().skip(position).flatten().copied().collect();
        if seen.is_empty() {
            seen = self.all.clone();
        }
        if seen.is_empty() {
            return DEFAULT_ALPHABET.chars().collect();
        }
        seen.into_iter().collect()
    }
}

impl<R: StoredRow> Scanner<R> {
    fn new(client: TableClient, request: ScanRequest, concurrency: usize) -> Scanner<R> {
        let query = &request.query;
        // Each range's two conditions replace the prefix's.
        let splittable = concurrency > 1
            && query.instance_filter_without_range().comparisons() + 2 <= MAX_COMPARISONS;
        let with_key = |columns: &Option<Vec<&'static str>>, needed: bool| {
            let mut columns = columns.clone();
            if let Some(columns) = &mut columns {
                if needed && !columns.contains(&PARTITION_KEY) {
                    columns.insert(0, PARTITION_KEY);
                }
            }
            columns
        };
        // The prefix check of `keeps_key` reads the key.
        let prefixed = query.instance_id_prefix.is_some();
        let select = with_key(&request.columns, prefixed);
        let keyed_select = with_key(&request.columns, prefixed || splittable);
        let keys_in_rows = select
            .as_ref()
            .is_none_or(|columns| columns.contains(&PARTITION_KEY));
        let whole = KeyRange::of_prefix(query.instance_id_prefix.as_deref());
        Scanner {
            client,
            select,
            keyed_select,
            keys_in_rows,
            tail: false,
            concurrency: concurrency.max(1),
            splittable,
            ranges: vec![Range::new(whole)],
            ready: VecDeque::from([0]),
            in_flight: FuturesUnordered::new(),
            pages_in_flight: 0,
            splitting: false,
            splits: 0,
            alphabet: Alphabet::default(),
            highest_key: None,
            failed: false,
            request,
        }
    }

    /// The next page with rows; `None` at the end or after an error.
    async fn next_page(&mut self) -> Option<Result<Vec<Row<R>>>> {
        loop {
            if self.failed {
                return None;
            }
            self.start_work();
            match self.in_flight.next().await? {
                Event::Page { range, page } => {
                    self.pages_in_flight -= 1;
                    match page {
                        Ok(page) => {
                            let rows = self.take_page(range, page);
                            if !rows.is_empty() {
                                return Some(Ok(rows));
                            }
                        }
                        Err(error) => {
                            self.failed = true;
                            return Some(Err(error));
                        }
                    }
                }
                Event::Plan { ranges } => {
                    for range in ranges {
                        if let Some(key) = range.start.key() {
                            raise(&mut self.highest_key, key);
                        }
                        self.ready.push_back(self.ranges.len());
                        self.ranges.push(Range::new(range));
                    }
                }
                Event::Split { range, boundaries } => {
                    self.splitting = false;
                    match boundaries {
                        Ok(boundaries) => {
                            for boundary in &boundaries {
                                raise(&mut self.highest_key, boundary);
                            }
                            self.split(range, boundaries)
                        }
                        // The pages will meet the same trouble, or not.
                        Err(error) => tracing::debug!(%error, "a scan's split probe failed"),
                    }
                }
            }
        }
    }

    /// Fetches the next page of every range that is ready while slots are
    /// free; with slots still idle, cuts the running range with the most
    /// pages left, where its keys say it stands.
    fn start_work(&mut self) {
        while self.pages_in_flight < self.concurrency {
            let Some(index) = self.ready.pop_front() else {
                break;
            };
            self.fetch(index);
        }
        // A cut costs a few probes: worth them once a quarter of the slots
        // are idle, not for the last page of each range.
        let idle = self.concurrency - self.pages_in_flight.min(self.concurrency);
        if !self.splittable || self.ranges.len() < 2 || idle < (self.concurrency / 4).max(1) {
            return;
        }
        // Rows without keys (a count's) say nothing of where a range
        // stands: from now on the long ranges' pages read their keys too.
        self.tail = true;
        if self.splitting || self.splits >= SPLITS_PER_SLOT * self.concurrency {
            return;
        }
        // The range with the most pages left, if it has enough to share.
        let mut digits = Digits::new(&self.alphabet);
        let Some((index, lower)) = self
            .ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                !r.done
                    && r.resume.is_some()
                    && r.splits < SPLITS_PER_RANGE
                    && !r.stale
                    && !r.keyless_in_flight
            })
            .filter_map(|(i, r)| {
                let last = r.last_key.as_deref()?;
                let highest = self.highest_key.as_deref();
                let left = pages_left(r, last, highest, &mut digits, self.request.page_size);
                (left >= MIN_PAGES_LEFT_TO_CUT).then(|| (i, left, last.to_owned()))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _, lower)| (i, lower))
        else {
            return;
        };
        let range = &mut self.ranges[index];
        range.splits += 1;
        self.splits += 1;
        self.splitting = true;
        let want = self.concurrency - self.pages_in_flight;
        // One-row probes, a few at once: fewer would chain their round trips.
        let probes = Bounded::new(TableProbe(self.client.clone()), RECUT_PROBES_IN_FLIGHT);
        let end = range.end.clone();
        let alphabet = self.alphabet.clone();
        self.in_flight.push(
            async move {
                let boundaries = boundaries(&probes, &lower, end.as_deref(), &alphabet, want).await;
                Event::Split {
                    range: index,
                    boundaries,
                }
            }
            .boxed(),
        );
    }

    /// Sends the next page request of a range: on its continuation, or,
    /// when the range's end moved since (and a returned key says where it
    /// stands), afresh after its last key with the new end.
    fn fetch(&mut self, index: usize) {
        let range = &mut self.ranges[index];
        let restart = match (&range.resume, &range.last_key) {
            (None, _) => true,
            (Some(_), Some(_)) => range.issued.end != range.end,
            (Some(_), None) => false,
        };
        if restart {
            range.issued = KeyRange {
                start: range
                    .last_key
                    .clone()
                    .map_or_else(|| range.start.clone(), KeyStart::After),
                end: range.end.clone(),
            };
            range.resume = None;
        }
        let first = index == 0 && range.pages == 0;
        // A range that has read two pages may be long (a plan for a small
        // hub expects one or two): in the tail, its pages say where it
        // stands.
        let select = if first || (self.tail && range.pages >= 2) {
            &self.keyed_select
        } else {
            &self.select
        };
        range.keyless_in_flight = select
            .as_ref()
            .is_some_and(|columns| !columns.contains(&PARTITION_KEY));
        let request = PageRequest {
            filter: self.request.query.filter_in(&range.issued),
            select: select.clone(),
            top: Some(self.request.page_size),
            format: self.request.format,
        };
        let resume = range.resume.clone();
        let client = self.client.clone();
        self.pages_in_flight += 1;
        self.in_flight.push(
            async move {
                Event::Page {
                    range: index,
                    page: client.query_page(&request, resume.as_ref()).await,
                }
            }
            .boxed(),
        );
    }

    /// Takes a range's page: its rows before the range's end, the range's
    /// new position, and the rows the query keeps. After the first page of
    /// a splittable scan, the rest of the key space is planned in ranges.
    fn take_page(&mut self, index: usize, page: Page<R>) -> Vec<Row<R>> {
        let range = &mut self.ranges[index];
        let mut rows = page.rows;
        let mut past_end = false;
        if let Some(end) = &range.end {
            if let Some(cut) = rows.iter().position(|(row, _)| {
                row.partition_key()
                    .is_some_and(|key| compare_keys(key, end) != Ordering::Less)
            }) {
                rows.truncate(cut);
                past_end = true;
            }
        }
        range.keyless_in_flight = false;
        if let Some(key) = rows.iter().rev().find_map(|(row, _)| row.partition_key()) {
            range.last_key = Some(key.to_owned());
            range.stale = false;
            raise(&mut self.highest_key, key);
        } else if !rows.is_empty() {
            range.stale = true;
        }
        let first = index == 0 && range.pages == 0;
        range.pages += 1;
        range.rows += rows.len() as u64;
        range.resume = page.continuation;
        range.done = past_end || range.resume.is_none();
        // Every key of the first page, a sample of the others.
        let sample = if first { 1 } else { ALPHABET_SAMPLE };
        for (row, _) in rows.iter().step_by(sample).chain(rows.last()) {
            if let Some(key) = row.partition_key() {
                self.alphabet.learn(key);
            }
        }
        if first && !range.done && self.splittable {
            // The first range ends here; the rest is planned afresh from
            // its last key (or from its start, when no row came back).
            range.done = true;
            let rest = KeyRange {
                start: range
                    .last_key
                    .clone()
                    .map_or_else(|| range.start.clone(), KeyStart::After),
                end: range.end.clone(),
            };
            // Nothing else is in flight while the plan is made: its probes
            // take every slot.
            let probes = Bounded::new(TableProbe(self.client.clone()), self.concurrency);
            let alphabet = self.alphabet.clone();
            let slots = self.concurrency;
            let first_page = FirstPage {
                keys: rows
                    .iter()
                    .filter_map(|(row, _)| row.partition_key().map(str::to_owned))
                    .collect(),
                page_size: self.request.page_size,
                can_cut_later: self.keys_in_rows,
            };
            self.in_flight.push(
                async move {
                    Event::Plan {
                        ranges: plan(&probes, rest, &alphabet, slots, first_page).await,
                    }
                }
                .boxed(),
            );
        } else if !range.done {
            self.ready.push_back(index);
        }
        let query = &self.request.query;
        rows.retain(|(row, _)| query.keeps_key(row.partition_key()));
        rows
    }

    /// Cuts a running range at the boundaries found for it: it keeps the
    /// keys up to the first boundary, and each boundary starts a new range.
    fn split(&mut self, index: usize, mut boundaries: Vec<String>) {
        let range = &mut self.ranges[index];
        // Cut only where the range is known to stand, and only a range
        // whose page in flight can be trimmed at a new end.
        let Some(lower) = range
            .last_key
            .as_deref()
            .filter(|_| !range.done && !range.stale && !range.keyless_in_flight)
        else {
            return;
        };
        // The range read on while the probes ran.
        boundaries.retain(|b| {
            compare_keys(b, lower) == Ordering::Greater
                && range
                    .end
                    .as_deref()
                    .is_none_or(|end| compare_keys(b, end) == Ordering::Less)
        });
        boundaries.sort_by(|a, b| compare_keys(a, b));
        boundaries.dedup();
        let Some(first) = boundaries.first().cloned() else {
            return;
        };
        let old_end = range.end.replace(first);
        for range in cut(
            KeyStart::From(boundaries[0].clone()),
            old_end,
            &boundaries[1..],
        ) {
            self.ready.push_back(self.ranges.len());
            self.ranges.push(Range::new(range));
        }
    }
}

/// The pages of `page_size` rows a running range has left, estimated from
/// the rows it returned and where its last key lies between its start and
/// its end (a page may end short, at a partition server's boundary);
/// infinite when that cannot be told.
fn pages_left(
    range: &Range,
    last: &str,
    highest: Option<&str>,
    digits: &mut Digits<'_>,
    page_size: u32,
) -> f64 {
    let start = match &range.start {
        KeyStart::First => "",
        KeyStart::From(key) | KeyStart::After(key) => key,
    };
    let done = digits.progress(start, last, range.end.as_deref(), highest);
    pages_after(range.rows as f64, done.unwrap_or(0.0), page_size)
}

/// Keys read as numbers in `[0, 1)` whose digits are the characters seen
/// at each position: a rough measure of how far into a range a key lies,
/// close for ids spread evenly (GUIDs, counters), that only decides
/// whether a running range is worth cutting.
struct Digits<'a> {
    alphabet: &'a Alphabet,
    /// The characters of each position asked for so far, in UTF-16 order.
    at: BTreeMap<usize, Vec<u32>>,
}

impl<'a> Digits<'a> {
    fn new(alphabet: &'a Alphabet) -> Self {
        Digits {
            alphabet,
            at: BTreeMap::new(),
        }
    }

    /// Where `key` lies from `start` (0) to `end` (1; `None`: past every
    /// key, `highest` being the highest known); `None` when the three
    /// cannot be told apart.
    fn progress(
        &mut self,
        start: &str,
        key: &str,
        end: Option<&str>,
        highest: Option<&str>,
    ) -> Option<f64> {
        // Characters all three share add the same to each: start after them.
        let shared = shared_chars;
        // With no end, the range runs to the end of the keys under the
        // prefix its start shares with this key and the highest known.
        let from = match (end, highest) {
            (Some(end), _) => shared(start, end).min(shared(start, key)),
            (None, Some(highest)) => shared(start, highest).min(shared(start, key)),
            (None, None) => shared(start, key),
        };
        let low = self.value(start, from);
        let high = end.map_or(1.0, |end| self.value(end, from));
        let span = high - low;
        (span > 0.0).then(|| ((self.value(key, from) - low) / span).clamp(0.0, 1.0))
    }

    /// The key's characters from position `from` on, as a fraction.
    fn value(&mut self, key: &str, from: usize) -> f64 {
        let mut value = 0.0;
        let mut scale = 1.0;
        let mut chars = key.chars().skip(from);
        for position in from..from + PLACING_POSITIONS {
            let alphabet = self.alphabet;
            let seen = self.at.entry(position).or_insert_with(|| {
                let mut ranks: Vec<u32> =
                    alphabet.at(position).into_iter().map(utf16_rank).collect();
                ranks.sort_unstable();
                ranks
            });
            // Each character seen is a digit, in order; an unseen one takes
            // the place of the next seen one, and the end of a key (a
            // shorter key sorts first) that of the first.
            let base = seen.len().max(1) as f64;
            let digit = chars.next().map_or(0, |c| {
                seen.partition_point(|&rank| rank < utf16_rank(c))
                    .min(seen.len().saturating_sub(1))
            });
            scale /= base;
            value += digit as f64 * scale;
        }
        value
    }
}

/// What the first page of a scan read: where the plan estimates the size
/// of the rest from.
#[derive(Debug)]
struct FirstPage {
    /// Its keys, in key order.
    keys: Vec<String>,
    page_size: u32,
    /// Whether the scan's rows carry their keys, so that a range found
    /// too long can be cut as soon as slots fall idle (a count's ranges
    /// read their keys only from then on, and are cut a page later).
    can_cut_later: bool,
}

impl FirstPage {
    /// The pages left after this page, estimated from where its keys lie
    /// in the key space: up to `end` (`None`: to the end of the keys under
    /// the prefix its last key and `highest`, a known key of the rest,
    /// share). Only the page's keys under the prefix its last key shares
    /// with the rest count: keys of another family of ids, before it, say
    /// nothing of the rest's density. Infinite when that cannot be told.
    fn pages_left(&self, alphabet: &Alphabet, highest: &str, end: Option<&str>) -> f64 {
        let Some(last) = self.keys.last() else {
            return f64::INFINITY;
        };
        let bound = end.unwrap_or(highest);
        let prefix: String = last.chars().take(shared_chars(last, bound)).collect();
        let mut under = self.keys.iter().filter(|key| key.starts_with(&prefix));
        let (Some(first), rows) = (under.next(), under.count() + 1) else {
            return f64::INFINITY;
        };
        if rows < 2 {
            return f64::INFINITY;
        }
        let mut digits = Digits::new(alphabet);
        let from = shared_chars(first, bound).min(shared_chars(first, last));
        let low = digits.value(first, from);
        let high = end.map_or(1.0, |end| digits.value(end, from));
        let done = (digits.value(last, from) - low) / (high - low);
        pages_after(rows as f64, done, self.page_size)
    }
}

/// The pages of `page_size` rows left when `rows` rows were read over the
/// fraction `done` of a range; infinite when `done` tells nothing (zero,
/// past one, not a number).
fn pages_after(rows: f64, done: f64, page_size: u32) -> f64 {
    if !(done > 0.0 && done <= 1.0) {
        return f64::INFINITY;
    }
    rows * (1.0 - done) / done / f64::from(page_size.max(1))
}

/// Raises `highest` to `key` when `key` is higher.
fn raise(highest: &mut Option<String>, key: &str) {
    if highest
        .as_deref()
        .is_none_or(|known| compare_keys(key, known) == Ordering::Greater)
    {
        *highest = Some(key.to_owned());
    }
}

/// The characters two keys share at their start.
fn shared_chars(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// Contiguous ranges (in key order) joined into `n`, each of about as many
/// of them as the others.
fn merge(ranges: Vec<(KeyRange, bool)>, n: usize) -> Vec<(KeyRange, bool)> {
    let starts: BTreeSet<usize> = std::iter::once(0)
        .chain(spread(
            &(1..ranges.len()).collect::<Vec<_>>(),
            n.saturating_sub(1),
        ))
        .collect();
    let mut merged: Vec<(KeyRange, bool)> = Vec::new();
    for (index, (range, cuttable)) in ranges.into_iter().enumerate() {
        match merged.last_mut() {
            Some((last, last_cuttable)) if !starts.contains(&index) => {
                last.end = range.end;
                *last_cuttable = *last_cuttable || cuttable;
            }
            _ => merged.push((range, cuttable)),
        }
    }
    merged
}

/// The ranges from `start` to `end`, cut at `boundaries` (sorted, within).
fn cut(start: KeyStart, end: Option<String>, boundaries: &[String]) -> Vec<KeyRange> {
    let starts = std::iter::once(start).chain(boundaries.iter().cloned().map(KeyStart::From));
    let ends = boundaries
        .iter()
        .cloned()
        .map(Some)
        .chain(std::iter::once(end));
    starts
        .zip(ends)
        .map(|(start, end)| KeyRange { start, end })
        .collect()
}

/// Cuts `rest` into about `slots` ranges, a few rounds of [`boundaries`]
/// at most; a range no probe could cut stays whole. A probe that fails
/// leaves the ranges as they are: the scan reads them as they are.
async fn plan(
    probes: &impl KeyProbe,
    rest: KeyRange,
    alphabet: &Alphabet,
    mut slots: usize,
    first: FirstPage,
) -> Vec<KeyRange> {
    let rest_end = rest.end.clone();
    let mut ranges = vec![(rest, true)];
    for round in 0..PLAN_ROUNDS {
        if round == 1 {
            // The first round found where the rest of the keys branch: with
            // them, the first page tells how many pages are left. A small
            // hub is read in as many ranges as it has pages.
            let mut alphabet = alphabet.clone();
            let found: Vec<&str> = ranges.iter().filter_map(|(r, _)| r.start.key()).collect();
            found.iter().for_each(|key| alphabet.learn(key));
            let last = first.keys.last().map_or("", String::as_str);
            let highest = found.last().copied().unwrap_or(last);
            let left = first.pages_left(&alphabet, highest, rest_end.as_deref());
            // The estimate can be low (ids whose density varies): a
            // scan that cuts its ranges late keeps a quarter of its
            // slots whatever it says.
            let floor = if first.can_cut_later {
                1
            } else {
                (slots / 4).max(1)
            };
            slots = slots.min((left.ceil() as usize).max(floor));
            if ranges.len() > slots {
                ranges = merge(ranges, slots);
            }
        }
        if ranges.len() >= slots || !ranges.iter().any(|(_, cuttable)| *cuttable) {
            break;
        }
        let want = slots.div_ceil(ranges.len()).max(2) - 1;
        // Cutting every range in two would overshoot: cut only as many as
        // the slots still need, spread over the key space.
        let cuttable: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].1).collect();
        let chosen: BTreeSet<usize> = if want == 1 {
            spread(&cuttable, slots - ranges.len())
                .into_iter()
                .collect()
        } else {
            cuttable.into_iter().collect()
        };
        // The cuts run at once; the probes' permits bound them together.
        let cuts: Vec<Option<Result<Vec<String>>>> =
            futures::future::join_all(ranges.iter().enumerate().map(|(index, (range, _))| {
                let chosen = chosen.contains(&index);
                async move {
                    if !chosen {
                        return None;
                    }
                    let lower = match &range.start {
                        KeyStart::First => "",
                        KeyStart::From(key) | KeyStart::After(key) => key,
                    };
                    Some(boundaries(probes, lower, range.end.as_deref(), alphabet, want).await)
                }
            }))
            .await;
        let mut next = Vec::new();
        for ((range, cuttable), found) in ranges.into_iter().zip(cuts) {
            let Some(found) = found else {
                next.push((range, cuttable));
                continue;
            };
            match found {
                Ok(found) if !found.is_empty() => {
                    next.extend(
                        cut(range.start, range.end, &found)
                            .into_iter()
                            .map(|r| (r, true)),
                    );
                }
                Ok(_) => next.push((range, false)),
                Err(error) => {
                    tracing::debug!(%error, "a scan's plan probe failed");
                    next.push((range, false));
                }
            }
        }
        ranges = next;
    }
    ranges.into_iter().map(|(range, _)| range).collect()
}

/// Up to `want` keys above `lower` and below `end` that start the branches
/// of the remaining keys at the first position where those keys differ.
async fn boundaries(
    probes: &impl KeyProbe,
    lower: &str,
    end: Option<&str>,
    alphabet: &Alphabet,
    want: usize,
) -> Result<Vec<String>> {
    let chars: Vec<char> = lower.chars().collect();
    let prefix_of = |len: usize| chars[..len].iter().collect::<String>();
    // `exists(i)`: some remaining key is at or above the successor of
    // `lower`'s first i characters. It is false up to the length of the
    // prefix all remaining keys share, and true above it.
    let shared_with_end = end.map_or(0, |end| {
        chars
            .iter()
            .zip(end.chars())
            .take_while(|(a, b)| **a == *b)
            .count()
    });
    let below_end =
        |target: &str| end.is_none_or(|end| compare_keys(target, end) == Ordering::Less);
    let (mut low, mut high) = (shared_with_end + 1, chars.len());
    let mut level = chars.len();
    // Most often the remaining keys branch at once (GUIDs, the first cuts
    // of any hub): ask that first, then search. Each probe is a round trip
    // before any range can start.
    let mut first = true;
    while low <= high {
        let middle = if first { low } else { (low + high) / 2 };
        first = false;
        let exists = match prefix_upper_bound(&prefix_of(middle)) {
            // No key below the end is at or past the end.
            Some(target) if below_end(&target) => probes.first_key(&target, end).await?.is_some(),
            _ => false,
        };
        if exists {
            level = middle - 1;
            high = middle - 1;
        } else {
            low = middle + 1;
        }
    }
    // At `level` the remaining keys branch: probe the start of each branch.
    let shared = prefix_of(level);
    let candidates = alphabet.at(level);
    let mut targets: Vec<String> = match chars.get(level) {
        Some(&at) => {
            let mut targets: Vec<String> = candidates
                .iter()
                .filter(|&&c| utf16_rank(c) > utf16_rank(at))
                .map(|c| format!("{shared}{c}"))
                .collect();
            targets.extend(prefix_upper_bound(&format!("{shared}{at}")));
            targets
        }
        None => candidates.iter().map(|c| format!("{shared}{c}")).collect(),
    };
    targets.retain(|target| below_end(target));
    targets.sort_by(|a, b| compare_keys(a, b));
    targets.dedup();
    // A cut in two probes the middle branch and, should it not exist, the
    // next one after the range's own (which does); more cuts probe every
    // branch seen, and keep boundaries spread among those found.
    let targets = if want <= 1 && targets.len() > 2 {
        vec![targets[0].clone(), spread(&targets, 1).remove(0)]
    } else {
        spread(&targets, MAX_PROBES)
    };
    let found: Vec<Option<String>> =
        futures::future::try_join_all(targets.iter().map(|target| probes.first_key(target, end)))
            .await?;
    let mut keys: Vec<String> = found.into_iter().flatten().collect();
    keys.sort_by(|a, b| compare_keys(a, b));
    keys.dedup();
    Ok(spread(&keys, want.max(1)))
}

/// Finds the first key at or above a target and below an end: where the
/// branches of the keys start.
trait KeyProbe: Sync {
    fn first_key<'a>(
        &'a self,
        target: &'a str,
        end: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>>>;
}

/// One-row queries of the table.
struct TableProbe(TableClient);

impl KeyProbe for TableProbe {
    fn first_key<'a>(
        &'a self,
        target: &'a str,
        end: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        probe(&self.0, target, end).boxed()
    }
}

/// Probes at most as many at once as there are permits, however many cuts
/// share them.
struct Bounded<P> {
    probes: P,
    permits: Semaphore,
}

impl<P: KeyProbe> Bounded<P> {
    fn new(probes: P, in_flight: usize) -> Bounded<P> {
        Bounded {
            probes,
            permits: Semaphore::new(in_flight.max(1)),
        }
    }
}

impl<P: KeyProbe> KeyProbe for Bounded<P> {
    fn first_key<'a>(
        &'a self,
        target: &'a str,
        end: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        async move {
            let _permit = self.permits.acquire().await;
            self.probes.first_key(target, end).await
        }
        .boxed()
    }
}

/// The first key at or above `target` and below `end`, reading the key
/// only; `None` when there is none (or the service would not say within a
/// few pages).
async fn probe(client: &TableClient, target: &str, end: Option<&str>) -> Result<Option<String>> {
    let range = KeyRange {
        start: KeyStart::From(target.to_owned()),
        end: end.map(str::to_owned),
    };
    let request = PageRequest {
        filter: InstanceFilter {
            key_range: Some(&range),
            ..InstanceFilter::default()
        }
        .to_odata(),
        select: Some(vec![PARTITION_KEY]),
        top: Some(1),
        format: ResponseFormat::NoMetadata,
    };
    let mut resume = None;
    for _ in 0..PROBE_PAGES {
        let page = client
            .query_page::<KeyRow>(&request, resume.as_ref())
            .await?;
        if let Some(key) = page.rows.iter().find_map(|(row, _)| row.partition_key()) {
            return Ok(Some(key.to_owned()));
        }
        match page.continuation {
            Some(next) => resume = Some(next),
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// A character's place in UTF-16 order (supplementary characters sort
/// between U+D7FF and U+E000).
fn utf16_rank(c: char) -> u32 {
    match c as u32 {
        code @ 0..=0xD7FF => code,
        code @ 0x10000.. => 0xD800 + (code - 0x10000),
        code => code + 0x10_0000,
    }
}

/// At most `n` of `items`, evenly spread: the middle one of each of `n`
/// equal parts (one boundary cuts a range in its middle, not at its start).
fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n)
        .map(|i| items[(2 * i + 1) * items.len() / (2 * n)].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_utf16_order() {
        let mut chars = vec![
            '\u{E000}',
            'a',
            '\u{10000}',
            '\u{D7FF}',
            '\u{FFFF}',
            '\u{10FFFF}',
        ];
        chars.sort_by_key(|&c| utf16_rank(c));
        let mut by_keys = chars.clone();
        by_keys.sort_by(|a, b| compare_keys(&a.to_string(), &b.to_string()));
        assert_eq!(chars, by_keys);
        assert_eq!(
            chars,
            [
                'a',
                '\u{D7FF}',
                '\u{10000}',
                '\u{10FFFF}',
                '\u{E000}',
                '\u{FFFF}'
            ]
        );
    }

    /// GUID-like keys: hex digits at every position, spread evenly.
    fn hex_keys() -> Vec<String> {
        (0..4096u32)
            .map(|i| format!("{:03x}{:029x}", i, i * 7919))
            .collect()
    }

    fn alphabet_of(keys: &[String]) -> Alphabet {
        let mut alphabet = Alphabet::default();
        keys.iter().for_each(|key| alphabet.learn(key));
        alphabet
    }

    #[test]
    fn a_key_is_placed_within_its_range() {
        let alphabet = alphabet_of(&hex_keys());
        let mut digits = Digits::new(&alphabet);
        let at = |digits: &mut Digits<'_>, start: &str, key: &str, end: Option<&str>| {
            digits.progress(start, key, end, None).unwrap()
        };
        let key = |head: &str| format!("{head:0<32}");
        let (four, five) = (key("4"), key("5"));
        let quarter = at(&mut digits, &four, &key("44"), Some(&five));
        assert!((quarter - 0.25).abs() < 0.05, "{quarter}");
        let most = at(&mut digits, &four, &key("4e"), Some(&five));
        assert!((most - 0.875).abs() < 0.05, "{most}");
        let half = at(&mut digits, "", &key("8"), None);
        assert!((half - 0.5).abs() < 0.05, "{half}");
        assert_eq!(at(&mut digits, &four, &four, Some(&five)), 0.0);
        // Counters: order-1 ... order-20000 in key order.
        let orders: Vec<String> = (1..=20000).map(|i| format!("order-{i}")).collect();
        let alphabet = alphabet_of(&orders);
        let mut digits = Digits::new(&alphabet);
        let third = digits
            .progress("order-1", "order-13", Some("order-2"), None)
            .unwrap();
        assert!((0.2..0.4).contains(&third), "{third}");
        // A range with no end runs to the highest key known, not to the end
        // of its start's prefix: from order-106, order-199 is not near the
        // end when order-9 exists.
        let alone = digits
            .progress("order-106", "order-199", None, None)
            .unwrap();
        let with_highest = digits
            .progress("order-106", "order-199", None, Some("order-9"))
            .unwrap();
        assert!(alone > 0.9, "{alone}");
        assert!(with_highest < 0.3, "{with_highest}");
        // A start past the key (it cannot be) reads as no progress.
        assert_eq!(
            digits.progress("order-5", "order-1", Some("order-6"), None),
            Some(0.0)
        );
    }

    #[test]
    fn only_ranges_with_pages_left_are_worth_cutting() {
        let alphabet = alphabet_of(&hex_keys());
        let mut digits = Digits::new(&alphabet);
        let range = |start: &str, end: &str, pages: u32| Range {
            pages,
            rows: u64::from(pages) * 100,
            ..Range::new(KeyRange {
                start: KeyStart::From(start.into()),
                end: Some(end.into()),
            })
        };
        let key = |head: &str| format!("{head:0<32}");
        let (four, five) = (key("4"), key("5"));
        // Seven pages read, seven eighths of the way: one page left.
        let nearly = pages_left(&range(&four, &five, 7), &key("4e"), None, &mut digits, 100);
        assert!((0.5..1.5).contains(&nearly), "{nearly}");
        assert!(nearly < MIN_PAGES_LEFT_TO_CUT);
        // One page read, a sixteenth of the way: fifteen left.
        let early = pages_left(&range(&four, &five, 1), &key("41"), None, &mut digits, 100);
        assert!((10.0..20.0).contains(&early), "{early}");
        // Pages cut short (at partition boundaries) count by their rows.
        let short = Range {
            rows: 70,
            ..range(&four, &five, 7)
        };
        let little = pages_left(&short, &key("4e"), None, &mut digits, 100);
        assert!(little < 0.2, "{little}");
        // No progress to measure: cut as before.
        assert_eq!(
            pages_left(&range(&four, &five, 1), &four, None, &mut digits, 100),
            f64::INFINITY
        );
    }

    #[test]
    fn the_first_page_tells_the_pages_left() {
        let alphabet = alphabet_of(&hex_keys());
        let key = |head: &str| format!("{head:0<32}");
        // A page of 100 keys spread evenly from `first` to `last`.
        let page = |first: &str, last: &str| {
            let (low, high) = (
                u128::from_str_radix(&key(first), 16).unwrap(),
                u128::from_str_radix(&key(last), 16).unwrap(),
            );
            FirstPage {
                keys: (0..100u128)
                    .map(|i| format!("{:032x}", low + (high - low) / 99 * i))
                    .collect(),
                page_size: 100,
                can_cut_later: true,
            }
        };
        // A third of the key space in one page: two pages left.
        let third = page("0", "55").pages_left(&alphabet, &key("f"), None);
        assert!((1.5..2.5).contains(&third), "{third}");
        // A hundredth: about 99 left.
        let big = page("0", "028f").pages_left(&alphabet, &key("f"), None);
        assert!((80.0..120.0).contains(&big), "{big}");
        // Within a range that ends: half of it read, one page left.
        let half = page("4", "48").pages_left(&alphabet, &key("4f"), Some(&key("5")));
        assert!((0.8..1.2).contains(&half), "{half}");
        // Nothing learned: cut as before.
        let none = page("4", "4").pages_left(&alphabet, &key("f"), None);
        assert_eq!(none, f64::INFINITY);
    }

    #[test]
    fn a_first_page_over_two_families_measures_only_the_rests() {
        // Ten ids of one family, then the first of a thousand of another.
        let page: Vec<String> = (0..10)
            .map(|n| format!("acme-{n}"))
            .chain(
                [
                    "zeta-0", "zeta-1", "zeta-10", "zeta-100", "zeta-101", "zeta-102", "zeta-103",
                    "zeta-104", "zeta-105", "zeta-106",
                ]
                .map(String::from),
            )
            .collect();
        let mut alphabet = Alphabet::default();
        page.iter().for_each(|key| alphabet.learn(key));
        ["zeta-107", "zeta-11", "zeta-2", "zeta-5", "zeta-9"]
            .iter()
            .for_each(|key| alphabet.learn(key));
        let first = FirstPage {
            keys: page,
            page_size: 20,
            can_cut_later: true,
        };
        // Read from the acme ids on, the page would seem to cover nearly
        // all the key space (0.02 pages left); the zeta ids alone say
        // several pages are left.
        let left = first.pages_left(&alphabet, "zeta-9", None);
        assert!(left >= 3.0, "{left}");
    }

    /// Keys in memory, probed as the table would be: the probes' targets,
    /// and the most in flight at once.
    #[derive(Default)]
    struct MemoryProbe {
        keys: Vec<String>,
        targets: std::sync::Mutex<Vec<String>>,
        in_flight: std::sync::atomic::AtomicUsize,
        most_in_flight: std::sync::atomic::AtomicUsize,
    }

    impl MemoryProbe {
        fn new(mut keys: Vec<String>) -> MemoryProbe {
            keys.sort_by(|a, b| compare_keys(a, b));
            MemoryProbe {
                keys,
                ..MemoryProbe::default()
            }
        }

        fn targets(&self) -> Vec<String> {
            self.targets.lock().unwrap().clone()
        }
    }

    impl KeyProbe for MemoryProbe {
        fn first_key<'a>(
            &'a self,
            target: &'a str,
            end: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Option<String>>> {
            use std::sync::atomic::Ordering::SeqCst;
            async move {
                self.targets.lock().unwrap().push(target.to_owned());
                let now = self.in_flight.fetch_add(1, SeqCst) + 1;
                self.most_in_flight.fetch_max(now, SeqCst);
                // Let the other probes of the moment start.
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                self.in_flight.fetch_sub(1, SeqCst);
                let at = self
                    .keys
                    .partition_point(|key| compare_keys(key, target) == Ordering::Less);
                Ok(self
                    .keys
                    .get(at)
                    .filter(|key| end.is_none_or(|end| compare_keys(key, end) == Ordering::Less))
                    .cloned())
            }
            .boxed()
        }
    }

    /// The first key of each branch of the keys above `lower` (and below
    /// `end`), at the first position where they differ, but `lower`'s own:
    /// what a cut should find, found by reading every key.
    fn branch_starts(keys: &[String], lower: &str, end: Option<&str>) -> Vec<String> {
        let mut rest: Vec<&String> = keys
            .iter()
            .filter(|key| key.as_str() > lower && end.is_none_or(|end| key.as_str() < end))
            .collect();
        rest.sort();
        let chars: Vec<char> = lower.chars().collect();
        let prefix = |n: usize| chars[..n].iter().collect::<String>();
        let level = (0..=chars.len())
            .take_while(|&n| rest.iter().all(|key| key.starts_with(&prefix(n))))
            .last()
            .unwrap();
        let mut starts: BTreeMap<Option<char>, String> = BTreeMap::new();
        for key in rest {
            let branch = key.chars().nth(level);
            if branch != chars.get(level).copied() {
                starts.entry(branch).or_insert_with(|| key.clone());
            }
        }
        starts.into_values().collect()
    }

    fn guids(n: u128) -> Vec<String> {
        let mut keys: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "{:032x}",
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                )
            })
            .collect();
        keys.sort();
        keys
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn keys_that_branch_at_once_are_cut_after_one_level_probe() {
        let keys = guids(4096);
        // The plan learns its characters from the first page.
        let alphabet = alphabet_of(&keys[..100]);
        let lower = keys[99].clone();
        let probes = MemoryProbe::new(keys.clone());
        let found = block_on(boundaries(&probes, &lower, None, &alphabet, 16)).unwrap();
        let expected = branch_starts(&keys, &lower, None);
        assert_eq!(expected.len(), 15, "{expected:?}");
        assert_eq!(found, expected);
        // One probe tells that the keys branch at their first character,
        // where a binary search over the key's 32 took five, one round
        // trip after another; then one probe per branch.
        assert_eq!(
            probes.targets().len(),
            expected.len() + 1,
            "{:?}",
            probes.targets()
        );
    }

    #[test]
    fn a_shared_prefix_is_found_and_cut_at_its_branches() {
        let shapes: [Vec<String>; 3] = [
            (1..=3000).map(|i| format!("order-{i}")).collect(),
            (0..3000u32)
                .map(|i| format!("tenant-42/job-{:08x}", i.wrapping_mul(0x9e37_79b9)))
                .collect(),
            (0..3000)
                .map(|i| format!("a/b#c?{}\\{}", i % 7, i))
                .collect(),
        ];
        for mut keys in shapes {
            keys.sort();
            let alphabet = alphabet_of(&keys[..100]);
            for (lower, end) in [
                (keys[99].clone(), None),
                (keys[1200].clone(), Some(keys[2400].clone())),
            ] {
                let probes = MemoryProbe::new(keys.clone());
                let found = block_on(boundaries(
                    &probes,
                    &lower,
                    end.as_deref(),
                    &alphabet,
                    MAX_PROBES,
                ))
                .unwrap();
                let expected = branch_starts(&keys, &lower, end.as_deref());
                assert!(!expected.is_empty(), "{lower}");
                assert_eq!(found, expected, "from {lower} to {end:?}");
            }
        }
    }

    #[test]
    fn a_cut_never_probes_at_or_past_its_end() {
        let keys = guids(4096);
        let alphabet = alphabet_of(&keys);
        let start = keys.iter().position(|key| key.starts_with("3a")).unwrap();
        // Branches `3f`, `4` ... lie past the end.
        let end = keys
            .iter()
            .find(|key| key.as_str() >= "3e")
            .unwrap()
            .clone();
        let lower = keys[start].clone();
        let probes = MemoryProbe::new(keys.clone());
        let found = block_on(boundaries(&probes, &lower, Some(&end), &alphabet, 4)).unwrap();
        assert!(!found.is_empty());
        assert!(
            found.iter().all(|key| *key > lower && *key < end),
            "{found:?}"
        );
        let targets = probes.targets();
        assert!(
            targets.iter().all(|target| *target < end),
            "probed at or past {end}: {targets:?}"
        );
    }

    #[test]
    fn a_plan_keeps_its_probes_within_the_slots() {
        // Three families: the first cut finds two boundaries, and the
        // next round cuts the three ranges at once.
        let keys: Vec<String> = ["alpha-", "beta-", "gamma-"]
            .iter()
            .flat_map(|family| {
                (0..2000u32).map(move |i| format!("{family}{:08x}", i.wrapping_mul(0x9e37_79b9)))
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        let first = FirstPage {
            keys: sorted[..100].to_vec(),
            page_size: 100,
            can_cut_later: true,
        };
        let alphabet = alphabet_of(&first.keys);
        let rest = KeyRange {
            start: KeyStart::After(sorted[99].clone()),
            end: None,
        };
        let slots = 16;
        let probes = Bounded::new(MemoryProbe::new(keys), slots);
        let ranges = block_on(plan(&probes, rest, &alphabet, slots, first));
        assert!(ranges.len() >= slots / 2, "{} ranges", ranges.len());
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end.as_deref(), pair[1].start.key());
        }
        use std::sync::atomic::Ordering::SeqCst;
        let most = probes.probes.most_in_flight.load(SeqCst);
        assert!(most <= slots, "{most} probes in flight for {slots} slots");
        // The cuts of a round share the slots, more than one cut's worth.
        assert!(most > slots / 2, "only {most} probes in flight at once");
    }

    #[test]
    fn merged_ranges_stay_contiguous() {
        let ranges: Vec<(KeyRange, bool)> = cut(
            KeyStart::After("a".into()),
            None,
            &["c".into(), "e".into(), "g".into(), "i".into()],
        )
        .into_iter()
        .map(|range| (range, true))
        .collect();
        let merged = merge(ranges.clone(), 2);
        let bounds: Vec<(Option<&str>, Option<&str>)> = merged
            .iter()
            .map(|(r, _)| (r.start.key(), r.end.as_deref()))
            .collect();
        assert_eq!(bounds, [(Some("a"), Some("g")), (Some("g"), None)]);
        assert_eq!(merge(ranges.clone(), 1).len(), 1);
        assert_eq!(merge(ranges.clone(), 1)[0].0.end, None);
        assert_eq!(merge(ranges.clone(), 5).len(), 5);
        assert_eq!(merge(ranges, 9).len(), 5);
    }

    #[test]
    fn spread_keeps_at_most_n_evenly() {
        let items: Vec<u32> = (0..10).collect();
        assert_eq!(spread(&items, 20), items);
        assert_eq!(spread(&items, 5), vec![1, 3, 5, 7, 9]);
        assert_eq!(spread(&items, 1), vec![5]);
        assert_eq!(spread(&items[..9], 1), vec![4]);
    }
}
