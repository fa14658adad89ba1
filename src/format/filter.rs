//! OData filters over the Instances table. Every value is quoted, with its
//! quotes doubled, so that no value can change a filter's meaning.

use time::OffsetDateTime;

use crate::format::keys::{escape_key, prefix_upper_bound};
use crate::format::time::format_time;
use crate::model::RuntimeStatus;

/// A string literal for an OData filter: quoted, quotes doubled.
pub(crate) fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The conditions of a listing, combined with "and" (statuses with "or").
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct InstanceFilter<'a> {
    pub statuses: &'a [RuntimeStatus],
    pub created_from: Option<OffsetDateTime>,
    pub created_to: Option<OffsetDateTime>,
    /// An instance-id prefix, unescaped: the filter is a key range on its
    /// escaped form, so only matching rows are read.
    pub instance_id_prefix: Option<&'a str>,
    pub task_hub_name: Option<&'a str>,
    /// Orchestrator names, exact matches on the Name column, or-ed.
    pub names: &'a [String],
    /// A range of partition keys; when set it stands for the prefix's range
    /// (a scan's ranges lie within it).
    pub key_range: Option<&'a KeyRange>,
}

/// Where a range of partition keys starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum KeyStart {
    /// At the first key.
    #[default]
    First,
    /// At this key, included.
    From(String),
    /// After this key.
    After(String),
}

impl KeyStart {
    /// The key it starts at or after; `None` at the first key.
    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            KeyStart::First => None,
            KeyStart::From(key) | KeyStart::After(key) => Some(key),
        }
    }
}

/// A range of partition keys: from `start` to `end`, `end` excluded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KeyRange {
    pub start: KeyStart,
    pub end: Option<String>,
}

impl KeyRange {
    /// The range of the ids that start with `prefix` (escaped here).
    pub(crate) fn of_prefix(prefix: Option<&str>) -> KeyRange {
        match prefix {
            None => KeyRange::default(),
            Some(prefix) => {
                let low = escape_key(prefix);
                KeyRange {
                    end: prefix_upper_bound(&low),
                    start: KeyStart::From(low),
                }
            }
        }
    }

    /// The range's conditions.
    fn conditions(&self) -> Vec<String> {
        let mut parts = Vec::new();
        match &self.start {
            KeyStart::First => {}
            KeyStart::From(key) => parts.push(format!("PartitionKey ge {}", odata_string(key))),
            KeyStart::After(key) => parts.push(format!("PartitionKey gt {}", odata_string(key))),
        }
        if let Some(end) = &self.end {
            parts.push(format!("PartitionKey lt {}", odata_string(end)));
        }
        parts
    }
}

/// The most comparisons Table Storage accepts in one `$filter`.
pub(crate) const MAX_COMPARISONS: usize = 15;

impl InstanceFilter<'_> {
    /// The OData text; `None` for every row.
    pub(crate) fn to_odata(&self) -> Option<String> {
        let mut parts = self.range().conditions();
        if let Some(from) = self.created_from {
            parts.push(format!("CreatedTime ge datetime'{}'", format_time(from)));
        }
        if let Some(to) = self.created_to {
            parts.push(format!("CreatedTime le datetime'{}'", format_time(to)));
        }
        if !self.statuses.is_empty() {
            let any: Vec<String> = self
                .statuses
                .iter()
                .map(|s| format!("RuntimeStatus eq {}", odata_string(s.name())))
                .collect();
            parts.push(format!("({})", any.join(" or ")));
        }
        if !self.names.is_empty() {
            let any: Vec<String> = self
                .names
                .iter()
                .map(|name| format!("Name eq {}", odata_string(name)))
                .collect();
            parts.push(format!("({})", any.join(" or ")));
        }
        if let Some(hub) = self.task_hub_name {
            parts.push(format!("TaskHubName eq {}", odata_string(hub)));
        }
        (!parts.is_empty()).then(|| parts.join(" and "))
    }

    /// How many comparisons [`Self::to_odata`] makes (Table Storage accepts
    /// at most [`MAX_COMPARISONS`]).
    pub(crate) fn comparisons(&self) -> usize {
        self.range().conditions().len()
            + usize::from(self.created_from.is_some())
            + usize::from(self.created_to.is_some())
            + self.statuses.len()
            + self.names.len()
            + usize::from(self.task_hub_name.is_some())
    }
}

impl InstanceFilter<'_> {
    /// The key range read: the one set, or the prefix's.
    fn range(&self) -> KeyRange {
        match self.key_range {
            Some(range) => range.clone(),
            None => KeyRange::of_prefix(self.instance_id_prefix),
        }
    }
}

/// The filter of one partition (all rows of one instance's History).
pub(crate) fn partition(partition_key: &str) -> String {
    format!("PartitionKey eq {}", odata_string(partition_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn filters_combine_with_and_and_statuses_with_or() {
        let filter = InstanceFilter {
            statuses: &[RuntimeStatus::Completed, RuntimeStatus::Failed],
            created_from: Some(datetime!(2024-01-01 02:00 +2)),
            created_to: Some(datetime!(2024-02-01 00:00 UTC)),
            instance_id_prefix: Some("ord/"),
            task_hub_name: Some("Hub"),
            names: &["A".into(), "B".into()],
            key_range: None,
        };
        assert_eq!(filter.comparisons(), 9);
        assert_eq!(
            filter.to_odata().unwrap(),
            "PartitionKey ge 'ord^0' and PartitionKey lt 'ord^1' \
             and CreatedTime ge datetime'2024-01-01T00:00:00.0000000Z' \
             and CreatedTime le datetime'2024-02-01T00:00:00.0000000Z' \
             and (RuntimeStatus eq 'Completed' or RuntimeStatus eq 'Failed') \
             and (Name eq 'A' or Name eq 'B') \
             and TaskHubName eq 'Hub'"
        );
        assert_eq!(InstanceFilter::default().to_odata(), None);
        assert_eq!(InstanceFilter::default().comparisons(), 0);
    }

    #[test]
    fn a_key_range_stands_for_the_prefix_range() {
        let range = KeyRange {
            start: KeyStart::After("ord^0a'".into()),
            end: Some("ord^0b".into()),
        };
        let filter = InstanceFilter {
            instance_id_prefix: Some("ord/"),
            statuses: &[RuntimeStatus::Running],
            key_range: Some(&range),
            ..InstanceFilter::default()
        };
        assert_eq!(
            filter.to_odata().unwrap(),
            "PartitionKey gt 'ord^0a''' and PartitionKey lt 'ord^0b' \
             and (RuntimeStatus eq 'Running')"
        );
        assert_eq!(filter.comparisons(), 3);
        let from = KeyRange {
            start: KeyStart::From("k".into()),
            end: None,
        };
        assert_eq!(
            InstanceFilter {
                key_range: Some(&from),
                ..InstanceFilter::default()
            }
            .to_odata()
            .unwrap(),
            "PartitionKey ge 'k'"
        );
    }

    #[test]
    fn values_cannot_change_the_filter() {
        assert_eq!(odata_string("x' or '1' eq '1"), "'x'' or ''1'' eq ''1'");
        let filter = InstanceFilter {
            instance_id_prefix: Some("x' or 'a' eq 'a"),
            task_hub_name: Some("h') or (1 eq 1"),
            names: &["n' or Name ne 'n".into()],
            ..InstanceFilter::default()
        }
        .to_odata()
        .unwrap();
        assert!(
            filter.contains("PartitionKey ge 'x'' or ''a'' eq ''a'"),
            "{filter}"
        );
        assert!(
            filter.contains("TaskHubName eq 'h'') or (1 eq 1'"),
            "{filter}"
        );
        assert!(
            filter.contains("(Name eq 'n'' or Name ne ''n')"),
            "{filter}"
        );
        assert_eq!(partition("a'b"), "PartitionKey eq 'a''b'");
    }
}
