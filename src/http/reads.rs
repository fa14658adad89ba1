//! Status reads shared by concurrent pollers: requests for the same
//! instance and representation that arrive while a table read is under way
//! wait for that read, and an answer stays fresh for a short window
//! (default 1 s) during which it is served without reading again. 200
//! clients polling one instance then cost the account about one read per
//! window, not one per poll.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use super::ApiError;
use crate::{InstanceStatus, InstanceStore, ReadOptions};

/// The default of [`super::HttpApi::read_window`].
pub const DEFAULT_READ_WINDOW: Duration = Duration::from_secs(1);
/// The longest read window the server accepts.
pub const MAX_READ_WINDOW: Duration = Duration::from_secs(10);
/// Past this many remembered answers, the stale ones are dropped.
const MAX_ENTRIES: usize = 10_000;

pub(super) type Answer = Result<Option<InstanceStatus>, ApiError>;

/// What a read is of: the task hub, the instance id, and whether the
/// input is shown.
type Key = (String, String, bool);

enum Slot {
    Reading(Shared<BoxFuture<'static, Answer>>),
    Fresh { at: Instant, answer: Box<Answer> },
}

#[derive(Default)]
pub(super) struct SharedReads {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl SharedReads {
    /// The status of `instance_id`: an answer younger than `window`, the
    /// read under way, or a new read.
    pub(super) async fn get(
        &self,
        window: Duration,
        store: &InstanceStore,
        instance_id: &str,
        show_input: bool,
    ) -> Answer {
        let key = (
            store.task_hub().to_owned(),
            instance_id.to_owned(),
            show_input,
        );
        let read = {
            let mut slots = self.slots.lock().expect("not poisoned");
            match slots.get(&key) {
                Some(Slot::Fresh { at, answer }) if at.elapsed() < window => {
                    return (**answer).clone();
                }
                Some(Slot::Reading(read)) => read.clone(),
                _ => {
                    let store = store.clone();
                    let id = instance_id.to_owned();
                    let read = async move {
                        store
                            .get_with(&id, ReadOptions::default().include_input(show_input))
                            .await
                            .map_err(ApiError::from)
                    }
                    .boxed()
                    .shared();
                    if slots.len() >= MAX_ENTRIES {
                        slots.retain(|_, slot| match slot {
                            Slot::Reading(_) => true,
                            Slot::Fresh { at, .. } => at.elapsed() < window,
                        });
                    }
                    slots.insert(key.clone(), Slot::Reading(read.clone()));
                    read
                }
            }
        };
        let answer = read.clone().await;
        let mut slots = self.slots.lock().expect("not poisoned");
        // Only the read that is still the slot's turns it fresh.
        if let Some(Slot::Reading(current)) = slots.get(&key) {
            if current.ptr_eq(&read) {
                if window.is_zero() {
                    slots.remove(&key);
                } else {
                    slots.insert(
                        key,
                        Slot::Fresh {
                            at: Instant::now(),
                            answer: Box::new(answer.clone()),
                        },
                    );
                }
            }
        }
        answer
    }
}
