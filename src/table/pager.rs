//! Queries, a page at a time: the one pager that listings, counts and
//! purges share.

use azure_data_tables::operations::QueryEntityResponse;
use azure_data_tables::prelude::Select;
use futures::{Stream, StreamExt};

use super::metadata::ResponseFormat;
use super::TableClient;
use crate::error::{Error, Result};
use crate::format::row::StoredRow;
use crate::model::ETag;

/// Where a query resumes: the service's NextPartitionKey and NextRowKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Continuation {
    pub next_partition_key: String,
    pub next_row_key: Option<String>,
}

/// What a query asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageRequest {
    /// An OData filter, every value in it quoted (see `format::filter`).
    pub filter: Option<String>,
    /// The columns to read; all of them when `None`.
    pub select: Option<Vec<&'static str>>,
    /// The most rows of one page (the service answers at most 1,000).
    pub top: Option<u32>,
    /// What the response carries besides the values: with
    /// [`ResponseFormat::NoMetadata`] rows come without ETags.
    pub format: ResponseFormat,
}

/// One page of a query, each row decoded into `R`.
#[derive(Debug)]
pub(crate) struct Page<R> {
    /// Each row with its ETag (absent when the service sent none).
    pub rows: Vec<(R, Option<ETag>)>,
    /// Where the next page starts; `None` at the end.
    pub continuation: Option<Continuation>,
}

impl TableClient {
    /// Fetches one page, from the start or from `resume`. A table that does
    /// not exist has no rows.
    pub(crate) async fn query_page<R: StoredRow>(
        &self,
        request: &PageRequest,
        resume: Option<&Continuation>,
    ) -> Result<Page<R>> {
        match self.query_existing_page(request, resume).await {
            Err(Error::TableNotFound { .. }) => Ok(Page {
                rows: Vec::new(),
                continuation: None,
            }),
            other => other,
        }
    }

    /// [`TableClient::query_page`], but a table that does not exist is
    /// [`Error::TableNotFound`]: a table with no rows is told apart from no
    /// table.
    pub(crate) async fn query_existing_page<R: StoredRow>(
        &self,
        request: &PageRequest,
        resume: Option<&Continuation>,
    ) -> Result<Page<R>> {
        let fetched = self
            .send(|| async {
                let mut context = azure_core::Context::new();
                context.insert(request.format);
                let mut query = self.table.query().context(context);
                if let Some(filter) = &request.filter {
                    query = query.filter(filter.clone());
                }
                if let Some(columns) = &request.select {
                    query = query.select(Select::new(columns.join(",")));
                }
                if let Some(top) = request.top {
                    query = query.top(top);
                }
                if let Some(resume) = resume {
                    query = query.initial_partition_key(resume.next_partition_key.clone());
                    if let Some(row_key) = &resume.next_row_key {
                        query = query.initial_row_key(row_key.clone());
                    }
                }
                let mut pages = query.into_stream::<R>();
                match pages.next().await {
                    Some(page) => page.map(Some),
                    None => Ok(None),
                }
            })
            .await
            .result;
        let page: QueryEntityResponse<R> = match fetched {
            Ok(Some(page)) => page,
            Ok(None) => return Err(Error::transport("the query returned no page")),
            Err(other) => return Err(other),
        };
        let continuation =
            azure_core::Continuable::continuation(&page).map(|(pk, rk)| Continuation {
                next_partition_key: pk,
                next_row_key: rk,
            });
        let rows = page
            .entities
            .into_iter()
            .map(|mut row| {
                let etag = row.take_etag();
                (row, etag)
            })
            .collect();
        Ok(Page { rows, continuation })
    }

    /// Every page of a query, lazily: the next page is fetched only when the
    /// stream is polled for it. A page may be empty while more follow; the
    /// stream ends when no continuation comes back.
    pub(crate) fn pages<R: StoredRow>(
        &self,
        request: PageRequest,
        start: Option<Continuation>,
    ) -> impl Stream<Item = Result<Page<R>>> + Send + 'static {
        let client = self.clone();
        futures::stream::try_unfold(Some(start), move |state| {
            let client = client.clone();
            let request = request.clone();
            async move {
                let Some(resume) = state else {
                    return Ok(None);
                };
                let page = client.query_page(&request, resume.as_ref()).await?;
                let next = page.continuation.clone().map(Some);
                Ok(Some((page, next)))
            }
        })
    }
}
