//! Query-string parameters as the original reads them: names compared
//! ignoring case, a parameter may repeat. Values that do not parse are a
//! 400 naming the parameter, not silently ignored.

use time::OffsetDateTime;

use super::ApiError;
use crate::format::time::parse_user_time;
use crate::model::RuntimeStatus;

/// The parsed query string of a request.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Params(pairs)
    }

    /// The first value of a parameter.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn bool(&self, name: &'static str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) if text.eq_ignore_ascii_case("true") => Ok(true),
            Some(text) if text.eq_ignore_ascii_case("false") => Ok(false),
            Some(text) => Err(ApiError::bad_parameter(
                name,
                format!("'{text}' is not true or false"),
            )),
        }
    }

    pub(crate) fn time(&self, name: &'static str) -> Result<Option<OffsetDateTime>, ApiError> {
        self.get(name)
            .map(|text| {
                parse_user_time(text).ok_or_else(|| {
                    ApiError::bad_parameter(
                        name,
                        format!("'{text}' is not a date and time (use ISO 8601, e.g. 2024-01-31T18:30:00Z)"),
                    )
                })
            })
            .transpose()
    }

    pub(crate) fn top(&self, default: u32, max: u32) -> Result<u32, ApiError> {
        match self.get("top") {
            None => Ok(default),
            Some(text) => match text.trim().parse::<u32>() {
                Ok(top) if (1..=max).contains(&top) => Ok(top),
                _ => Err(ApiError::bad_parameter(
                    "top",
                    format!("'{text}' is not a whole number from 1 to {max}"),
                )),
            },
        }
    }

    /// `name` (orchestrator names, an addition to the contract's
    /// parameters), comma separated and/or repeated; empty items are
    /// ignored.
    pub(crate) fn names(&self) -> Vec<String> {
        self.all("name")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `runtimeStatus`, comma separated and/or repeated.
    pub(crate) fn statuses(&self) -> Result<Vec<RuntimeStatus>, ApiError> {
        let mut statuses = Vec::new();
        for value in self
            .all("runtimeStatus")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            match value.parse::<RuntimeStatus>() {
                Ok(status) if status != RuntimeStatus::Unknown => statuses.push(status),
                _ => {
                    let valid: Vec<&str> = RuntimeStatus::ALL.iter().map(|s| s.name()).collect();
                    return Err(ApiError::bad_parameter(
                        "runtimeStatus",
                        format!(
                            "'{value}' is not a runtime status; valid values are {}",
                            valid.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(statuses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ignore_case_and_values_repeat() {
        let params = Params::parse(Some(
            "RuntimeStatus=Running,Failed&runtimestatus=completed&TOP=5",
        ));
        assert_eq!(
            params.statuses().unwrap(),
            [
                RuntimeStatus::Running,
                RuntimeStatus::Failed,
                RuntimeStatus::Completed
            ]
        );
        assert_eq!(params.top(100, 1000).unwrap(), 5);
    }

    #[test]
    fn names_split_repeat_and_ignore_case_of_the_parameter() {
        let params = Params::parse(Some("name=A,%20B&NAME=C&name=&instanceIdPrefix=x"));
        assert_eq!(params.names(), ["A", "B", "C"]);
        assert!(Params::parse(None).names().is_empty());
    }

    #[test]
    fn a_bad_status_lists_the_valid_ones() {
        let err = Params::parse(Some("runtimeStatus=Running,Done"))
            .statuses()
            .unwrap_err();
        assert!(
            err.message.contains("runtimeStatus") && err.message.contains("'Done'"),
            "{}",
            err.message
        );
        assert!(err.message.contains(
            "Running, Completed, ContinuedAsNew, Failed, Canceled, Terminated, Pending, Suspended"
        ));
        assert!(Params::parse(Some("runtimeStatus=Unknown"))
            .statuses()
            .is_err());
    }

    #[test]
    fn a_bad_time_names_the_parameter() {
        let err = Params::parse(Some("createdTimeFrom=soon"))
            .time("createdTimeFrom")
            .unwrap_err();
        assert!(
            err.message
                .starts_with("createdTimeFrom: 'soon' is not a date"),
            "{}",
            err.message
        );
    }

    #[test]
    fn top_and_booleans_are_checked() {
        for bad in ["0", "1001", "-1", "ten"] {
            let err = Params::parse(Some(&format!("top={bad}")))
                .top(100, 1000)
                .unwrap_err();
            assert!(err.message.starts_with("top:"), "{}", err.message);
        }
        assert_eq!(Params::parse(None).top(100, 1000).unwrap(), 100);
        assert!(Params::parse(Some("showInput=FALSE"))
            .bool("showInput", true)
            .is_ok_and(|b| !b));
        assert!(Params::parse(Some("showInput=maybe"))
            .bool("showInput", true)
            .is_err());
    }
}
