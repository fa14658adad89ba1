//! The status page in a real headless browser: Chromium driven through
//! ChromeDriver (Debian's `chromium` and `chromium-driver` packages).
//!
//! Without them each test is skipped, with a `SKIPPED:` notice on standard
//! error, unless `DURABLE_STATUS_REQUIRE_BROWSER` is set (as CI does): then
//! it fails.
//!
//! The page reaches the API through the counting proxy of `tests/common`,
//! so that a test sees every request the page made: its line, its headers.
//! Screenshots go to `target/tmp/screenshots/` (light and dark, desktop and
//! phone), to be looked at; the test fails when one renders empty.

mod common;
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use durable_status::http::HttpApi;
use durable_status::{CustomStatus, InstanceStore, NewInstance, RuntimeStatus, Secret};
use serde_json::{json, Value};

use common::proxy::Proxy;
use webdriver::{
    browser_or_skip, decode_png, find_browser, key, locate, required, Browser, Driver, Session,
    Window, CHROMEDRIVER_VARIABLE, CHROMIUM_VARIABLE,
};

const BASE: &str = "/runtime/webhooks/durabletask";

/// The API served on loopback, behind a proxy that counts the page's requests.
struct Served {
    store: common::TestStore,
    front: Proxy,
    /// The page's address (the proxy's).
    base: String,
}

async fn serve(keys: Vec<Secret>) -> Served {
    serve_with(keys, |api| api).await
}

/// [`serve`], with settings of the API.
async fn serve_with(keys: Vec<Secret>, settings: impl FnOnce(HttpApi) -> HttpApi) -> Served {
    let store = common::store().await;
    let api = settings(HttpApi::new((*store).clone(), keys));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(durable_status::http::serve(
        listener,
        api,
        std::future::pending(),
    ));
    let front = Proxy::in_front_of(addr.to_string());
    let base = format!("http://127.0.0.1:{}", front.port());
    Served { store, front, base }
}

impl Served {
    /// The request lines (percent-decoded) the page sent since the last call.
    fn lines(&self) -> Vec<String> {
        self.front.take_lines()
    }
}

/// A browser session, its driver and its profile, gone when dropped.
struct Browsing {
    session: Session,
    _driver: Driver,
    _profile: Scratch,
}

impl std::ops::Deref for Browsing {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

async fn browse(browser: &Browser, name: &str, window: Window) -> Browsing {
    let profile = Scratch::new(&format!("profile-{name}"));
    let driver = Driver::start(&browser.chromedriver).await;
    let session = driver.session(&browser.chromium, &profile.0, window).await;
    Browsing {
        session,
        _driver: driver,
        _profile: profile,
    }
}

fn custom(value: Value) -> CustomStatus {
    CustomStatus::from_value(&value).unwrap()
}

async fn running(store: &InstanceStore, id: &str, name: &str) {
    store
        .create(NewInstance::new(id, name).status(RuntimeStatus::Running))
        .await
        .unwrap();
}

/// The ids of the listed rows, in the order shown.
const ROW_IDS: &str =
    "return [...document.querySelectorAll('#instances tbody tr')].map(r => r.dataset.id);";

/// The statuses of the listed rows, in the order shown.
const ROW_STATUSES: &str = "return [...document.querySelectorAll('#instances tbody td.status')].map(td => td.textContent);";

/// What the visible error elements say.
const ERRORS: &str = "return [...document.querySelectorAll('.error')].filter(e => !e.hidden).map(e => e.textContent);";

fn is_get_of(line: &str, id: &str) -> bool {
    let path = format!("GET {BASE}/instances/{id}");
    line.starts_with(&path) && matches!(line[path.len()..].chars().next(), Some('?' | ' '))
}

fn is_events_of(line: &str, id: &str) -> bool {
    line.starts_with(&format!("GET {BASE}/instances/{id}/events"))
}

fn is_listing(line: &str) -> bool {
    line.starts_with(&format!("GET {BASE}/instances?"))
}

#[tokio::test]
async fn the_page_modules_read_progress_times_and_event_streams() {
    let Some(browser) = browser_or_skip("the_page_modules_read_progress_times_and_event_streams")
    else {
        return;
    };
    let served = serve(vec![]).await;
    let page = browse(&browser, "modules", Window::DESKTOP).await;
    page.open(&format!("{}/", served.base)).await;
    let results = page
        .eval_async(
            r#"
            const f = await import('/format.js');
            const s = await import('/sse.js');
            const p = (v) => { const r = f.progressOf(v); return r && [Math.round(r.fraction * 100), r.text]; };
            const parse = (chunks) => {
              const parser = new s.SseParser();
              return chunks.flatMap((c) => parser.push(c));
            };
            return {
              progress: [
                p(0.4), p(1.5), p({progress: 0.4}), p({progress: 40}), p({progress: 140}),
                p({done: 9, total: 10}), p({completed: 1, total: 4}), p({done: 1, total: 0}),
                p({percentComplete: 55}), p({nextActions: ['A']}), p('0.5'), p(null), p([0.5]),
              ],
              actions: [f.nextActionsOf({nextActions: ['A', {b: 1}]}), f.nextActionsOf({foo: 2}), f.nextActionsOf(null)],
              durations: [0, 999, 1000, 59000, 61000, 3600000, 3723000, 90061000].map(f.formatDuration),
              allowed: ['Running', 'Suspended', 'Completed', 'Pending'].map((st) => {
                const a = f.actionsFor(st);
                return Object.keys(a).filter((k) => a[k]).join();
              }),
              range: [
                f.createdRange('hour', '', '', Date.parse('2024-01-01T12:00:00Z')),
                f.createdRange('custom', '2024-01-02T00:00', '2024-01-01T00:00').error,
                f.createdRange('any', '', ''),
              ],
              newest: f.newestFirst([
                {instanceId: 'a', createdTime: '2024-01-01T00:00:00Z'},
                {instanceId: 'c', createdTime: '2024-01-03T00:00:00Z'},
                {instanceId: 'b', createdTime: '2024-01-03T00:00:00Z'},
              ]).map((i) => i.instanceId).join(),
              date: [
                f.formatDate('2024-03-05T14:07:09Z').includes('2024'),
                f.formatDate('2024-03-05T14:07:09Z', {short: true, now: new Date('2024-06-01T00:00:00Z')}).includes('2024'),
                f.formatDate('2023-03-05T14:07:09Z', {short: true, now: new Date('2024-06-01T00:00:00Z')}).includes('2023'),
                f.formatDate('2024-03-05T14:07:09Z', {short: true}).includes('Mar'),
                f.formatDate(null),
              ],
              events: parse([
                ': heartbeat\r\n',
                'event: status\r',
                '\nid: 7\r\ndata: {"a":\r\ndata: 1}\r\n\r',
                '\n',
                'data: no type\n\n',
                'event: lonely\n\n',
                'id: 8\nevent: end\ndata: x\n',
                '\n',
                'retry: 100\r\r',
              ]),
            };
            "#,
        )
        .await;
    assert_eq!(
        results["progress"],
        json!([
            [40, "40%"],
            null,
            [40, "40%"],
            [40, "40%"],
            null,
            [90, "9 of 10 (90%)"],
            [25, "1 of 4 (25%)"],
            null,
            [55, "55%"],
            null,
            null,
            null,
            null
        ]),
        "{results}"
    );
    assert_eq!(
        results["actions"],
        json!([["A", "{\"b\":1}"], null, null]),
        "{results}"
    );
    assert_eq!(
        results["durations"],
        json!([
            "< 1 s",
            "< 1 s",
            "1 s",
            "59 s",
            "1 min 1 s",
            "1 h",
            "1 h 2 min",
            "1 d 1 h"
        ]),
        "{results}"
    );
    assert_eq!(
        results["allowed"],
        json!([
            "terminate,suspend",
            "terminate,resume",
            "purge",
            "terminate,suspend"
        ])
    );
    assert_eq!(
        results["range"],
        json!([
            {"from": "2024-01-01T11:00:00.000Z"},
            "the range starts after it ends",
            {}
        ])
    );
    assert_eq!(results["newest"], json!("b,c,a"));
    assert_eq!(results["date"], json!([true, false, true, true, ""]));
    // Line ends of every kind, also split across chunks; a comment is a
    // heartbeat; data lines join; the id persists; an event without data
    // is not dispatched.
    assert_eq!(
        results["events"],
        json!([
            {"comment": "heartbeat"},
            {"type": "status", "data": "{\"a\":\n1}", "id": "7"},
            {"type": "message", "data": "no type", "id": "7"},
            {"type": "end", "data": "x", "id": "8"},
        ]),
        "{results}"
    );
}

#[tokio::test]
async fn filters_by_status_prefix_name_and_created_time() {
    let Some(browser) = browser_or_skip("filters_by_status_prefix_name_and_created_time") else {
        return;
    };
    let served = serve(vec![]).await;
    let store = &served.store;
    running(store, "order-1", "ProcessOrder").await;
    running(store, "invoice-1", "SendInvoice").await;
    for (id, name) in [("order-2", "ProcessOrder"), ("invoice-2", "SendInvoice")] {
        store.create(NewInstance::new(id, name)).await.unwrap();
        store.complete(id, None).await.unwrap();
    }
    store
        .create(NewInstance::new("order-3", "ProcessOrder"))
        .await
        .unwrap();
    store.fail("order-3", "out of stock").await.unwrap();

    let page = browse(&browser, "filters", Window::DESKTOP).await;
    page.open(&format!("{}/", served.base)).await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(5),
    )
    .await;
    served.lines();

    // Status: the box filters the list, and the server is asked for it.
    page.click("#filter-status input[value='Running']").await;
    page.wait_for(ROW_STATUSES, json!(["Running", "Running"]))
        .await;
    assert!(served
        .lines()
        .iter()
        .any(|l| is_listing(l) && l.contains("runtimeStatus=Running")));
    page.click("#filter-status input[value='Failed']").await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(3),
    )
    .await;

    // The prefix narrows it further.
    page.type_into("#filter-prefix", "order-").await;
    let mut ids = page.eval(ROW_IDS).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids.as_array().unwrap().len() != 2 {
        assert!(Instant::now() < deadline, "{ids}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        ids = page.eval(ROW_IDS).await;
    }
    let mut ids: Vec<String> = serde_json::from_value(ids).unwrap();
    ids.sort();
    assert_eq!(ids, ["order-1", "order-3"]);
    assert!(served
        .lines()
        .iter()
        .any(|l| is_listing(l) && l.contains("instanceIdPrefix=order-")));

    // The filter is in the page's address: a reload keeps it.
    let search = page.eval("return location.search").await;
    let search = search.as_str().unwrap();
    assert!(
        search.contains("status=Running%2CFailed") && search.contains("prefix=order-"),
        "{search}"
    );
    page.open(&format!("{}/{search}", served.base)).await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(2),
    )
    .await;
    page.wait_for(
        "return document.querySelector('#filter-status input[value=Failed]').checked && document.getElementById('filter-prefix').value",
        json!("order-"),
    )
    .await;

    // Cleared, then by orchestrator name.
    page.click("#filter-clear").await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(5),
    )
    .await;
    page.type_into("#filter-name", "SendInvoice").await;
    page.wait_for_text("#list-summary", "2 ").await;
    let mut ids: Vec<String> = serde_json::from_value(page.eval(ROW_IDS).await).unwrap();
    ids.sort();
    assert_eq!(ids, ["invoice-1", "invoice-2"]);

    // Created time: the last hour holds them all; a range in the past none.
    page.eval("document.getElementById('filter-name').value = ''; document.getElementById('filters').requestSubmit();").await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(5),
    )
    .await;
    page.eval(
        "const s = document.getElementById('filter-created'); s.value = 'hour'; s.dispatchEvent(new Event('change', {bubbles: true}));",
    )
    .await;
    page.wait_for_text("#list-summary", "5 ").await;
    assert!(served
        .lines()
        .iter()
        .any(|l| is_listing(l) && l.contains("createdTimeFrom=")));
    page.eval(
        "const s = document.getElementById('filter-created'); s.value = 'custom'; s.dispatchEvent(new Event('change', {bubbles: true}));
         document.getElementById('filter-from').value = '2001-01-01T00:00:00';
         const to = document.getElementById('filter-to'); to.value = '2001-01-02T00:00:00';
         to.dispatchEvent(new Event('change', {bubbles: true}));",
    )
    .await;
    page.wait_for(
        "return document.getElementById('empty').hidden",
        json!(false),
    )
    .await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(0),
    )
    .await;
    // A range that ends before it starts is an error, and nothing is asked.
    served.lines();
    page.eval(
        "const to = document.getElementById('filter-to'); to.value = '2000-01-01T00:00:00';
         to.dispatchEvent(new Event('change', {bubbles: true}));",
    )
    .await;
    page.wait_for_text("#filter-error", "starts after it ends")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !served.lines().iter().any(|l| is_listing(l)),
        "no listing for a range that cannot match"
    );

    // An error of the server is shown as an error, not as rows.
    page.click("#filter-clear").await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(5),
    )
    .await;
    // (An id prefix longer than a key can be.)
    let long = "p".repeat(1100);
    page.eval(&format!(
        "document.getElementById('filter-prefix').value = '{long}'; document.getElementById('filters').requestSubmit();"
    ))
    .await;
    page.wait_for_text("#list-error", "Cannot list instances: ")
        .await;
    page.wait_for_text("#list-error", "instance id prefix")
        .await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(0),
    )
    .await;
    page.wait_for_text("#live", "Error: Cannot list instances")
        .await;
}

#[tokio::test]
async fn load_more_follows_the_continuation_token_newest_first() {
    let Some(browser) = browser_or_skip("load_more_follows_the_continuation_token_newest_first")
    else {
        return;
    };
    let served = serve(vec![]).await;
    let store = &served.store;
    // The older instances come first in key order, the newer ones last.
    let create = |prefix: &'static str| {
        futures::future::join_all((0..60).map(move |i| {
            let store = (**store).clone();
            async move {
                store
                    .create(NewInstance::new(format!("{prefix}-{i:03}"), "Batch"))
                    .await
                    .unwrap();
            }
        }))
    };
    create("a-old").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create("z-new").await;

    let page = browse(&browser, "paging", Window::DESKTOP).await;
    page.open(&format!("{}/", served.base)).await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(50),
    )
    .await;
    page.wait_for(
        "return document.getElementById('load-more').hidden",
        json!(false),
    )
    .await;
    let first: Vec<String> = serde_json::from_value(page.eval(ROW_IDS).await).unwrap();
    assert!(first.iter().all(|id| id.starts_with("a-old")), "{first:?}");
    served.front.take_request_heads();

    page.click("#load-more").await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(100),
    )
    .await;
    // The next page was asked with the token of the first.
    let heads = served.front.take_request_heads();
    let more = heads
        .iter()
        .find(|h| h.line.starts_with(&format!("GET {BASE}/instances?")))
        .expect("a listing request");
    assert!(
        more.header("x-ms-continuation-token")
            .is_some_and(|t| !t.is_empty()),
        "{more:?}"
    );
    // Newest first within what is loaded: the newer instances of the
    // second page come before the older ones of the first.
    let rows: Vec<String> = serde_json::from_value(page.eval(ROW_IDS).await).unwrap();
    let newer = rows.iter().filter(|id| id.starts_with("z-new")).count();
    assert_eq!(newer, 40, "{rows:?}");
    assert!(
        rows[..40].iter().all(|id| id.starts_with("z-new")),
        "{rows:?}"
    );
    let times: Vec<String> = serde_json::from_value(
        page.eval("return [...document.querySelectorAll('#instances tbody td.time time')].map(t => t.dateTime);")
            .await,
    )
    .unwrap();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // From the keyboard: the focus goes to the list once the last page is in.
    page.eval("document.getElementById('load-more').focus();")
        .await;
    page.press(&[key::ENTER]).await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(120),
    )
    .await;
    page.wait_for(
        "return document.getElementById('load-more').hidden",
        json!(true),
    )
    .await;
    page.wait_for(
        "return document.activeElement.closest('#instances') !== null",
        json!(true),
    )
    .await;
    page.wait_for_text("#list-summary", "120").await;
    // Dates read in local time, with their date.
    let created = page
        .eval(
            r"const t = document.querySelector('#instances tbody td.time time');
             const d = new Date(t.dateTime);
             const month = d.toLocaleString(undefined, {month: 'short'});
             return [t.textContent.includes(month) && t.textContent.includes(String(d.getDate()))
                     && /\d:\d\d:\d\d/.test(t.textContent), t.textContent];",
        )
        .await;
    assert_eq!(created[0], json!(true), "{created}");
}

#[tokio::test]
async fn the_counts_bar_filters_by_the_status_clicked() {
    let Some(browser) = browser_or_skip("the_counts_bar_filters_by_the_status_clicked") else {
        return;
    };
    let served = serve(vec![]).await;
    let store = &served.store;
    for i in 0..3 {
        running(store, &format!("run-{i}"), "Work").await;
    }
    for i in 0..2 {
        let id = format!("done-{i}");
        store.create(NewInstance::new(&id, "Work")).await.unwrap();
        store.complete(&id, None).await.unwrap();
    }
    store
        .create(NewInstance::new("bad-0", "Work"))
        .await
        .unwrap();
    store.fail("bad-0", "boom").await.unwrap();

    let page = browse(&browser, "counts", Window::DESKTOP).await;
    page.open(&format!("{}/", served.base)).await;
    let legend =
        "return [...document.querySelectorAll('#counts-legend button')].map(b => b.textContent);";
    page.wait_for(legend, json!(["Running 3", "Completed 2", "Failed 1"]))
        .await;
    page.wait_for_text("#counts-total", "6 in all").await;
    page.wait_for(
        "return [...document.querySelectorAll('#counts-bar .segment')].map(s => s.dataset.status + ':' + s.style.flexGrow);",
        json!(["Running:3", "Completed:2", "Failed:1"]),
    )
    .await;

    // A click on the bar filters by that status.
    page.click("#counts-bar .segment[data-status='Completed']")
        .await;
    page.wait_for(ROW_STATUSES, json!(["Completed", "Completed"]))
        .await;
    page.wait_for(
        "return document.querySelector('#filter-status input[value=Completed]').checked",
        json!(true),
    )
    .await;
    page.wait_for(
        "return document.querySelector('#counts-legend button[data-status=Completed]').getAttribute('aria-pressed')",
        json!("true"),
    )
    .await;
    // The counts stay those of every status, the others dimmed.
    page.wait_for(legend, json!(["Running 3", "Completed 2", "Failed 1"]))
        .await;
    page.wait_for(
        "return document.querySelector('#counts-bar .segment[data-status=Running]').classList.contains('dimmed')",
        json!(true),
    )
    .await;
    // Clicked again, the filter is gone.
    page.click("#counts-bar .segment[data-status='Completed']")
        .await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(6),
    )
    .await;
    // The legend filters too (it is the bar's keyboard way).
    page.click("#counts-legend button[data-status='Failed']")
        .await;
    page.wait_for(ROW_IDS, json!(["bad-0"])).await;

    // The counts follow the other filters, and the server is asked for them.
    page.click("#counts-legend button[data-status='Failed']")
        .await;
    served.lines();
    page.type_into("#filter-prefix", "run-").await;
    page.wait_for(legend, json!(["Running 3"])).await;
    assert!(served
        .lines()
        .iter()
        .any(|l| l.starts_with(&format!("GET {BASE}/instancecounts?"))
            && l.contains("instanceIdPrefix=run-")));
}

#[tokio::test]
async fn actions_ask_first_and_a_refusal_shows_the_servers_message() {
    let Some(browser) =
        browser_or_skip("actions_ask_first_and_a_refusal_shows_the_servers_message")
    else {
        return;
    };
    let served = serve(vec![]).await;
    let store = &served.store;
    running(store, "job-1", "Work").await;
    running(store, "job-2", "Work").await;

    let page = browse(&browser, "actions", Window::DESKTOP).await;
    page.open(&format!("{}/?instance=job-1", served.base)).await;
    page.wait_for(
        "return document.getElementById('detail-status').textContent",
        json!("Running"),
    )
    .await;
    // Purging needs a finished instance: not offered for a running one.
    assert_eq!(
        page.eval("return document.getElementById('action-purge').disabled")
            .await,
        json!(true)
    );
    assert_eq!(
        page.eval("return document.getElementById('action-resume').disabled")
            .await,
        json!(true)
    );

    // Cancelled: nothing is sent.
    served.lines();
    page.click("#action-terminate").await;
    page.wait_for(
        "return document.getElementById('confirm').open",
        json!(true),
    )
    .await;
    page.wait_for("return document.activeElement.id", json!("confirm-reason"))
        .await;
    page.click("#confirm-cancel").await;
    page.wait_for(
        "return document.getElementById('confirm').open",
        json!(false),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!served.lines().iter().any(|l| l.starts_with("POST")));

    // Confirmed, with a reason: terminated.
    page.click("#action-terminate").await;
    page.wait_for_text("#confirm-title", "Terminate job-1?")
        .await;
    page.type_into("#confirm-reason", "no longer needed").await;
    page.click("#confirm-ok").await;
    page.wait_for(
        "return document.getElementById('detail-status').textContent",
        json!("Terminated"),
    )
    .await;
    page.wait_for(
        "return document.getElementById('confirm').open",
        json!(false),
    )
    .await;
    assert!(served.lines().iter().any(|l| l.starts_with(&format!(
        "POST {BASE}/instances/job-1/terminate?reason=no longer needed"
    ))));
    let status = store.get("job-1").await.unwrap().unwrap();
    assert_eq!(status.runtime_status, RuntimeStatus::Terminated);
    page.wait_for_text("#live", "job-1").await;

    // Refused: the instance finished while the question was open; the
    // server's message is shown, and the dialog stays to show it.
    page.click("#instances tbody tr[data-id='job-2']").await;
    page.wait_for(
        "return document.getElementById('detail-title').textContent + ' ' + document.getElementById('detail-status').textContent",
        json!("job-2 Running"),
    )
    .await;
    page.click("#action-terminate").await;
    page.wait_for(
        "return document.getElementById('confirm').open",
        json!(true),
    )
    .await;
    store.complete("job-2", None).await.unwrap();
    page.click("#confirm-ok").await;
    page.wait_for_text(
        "#confirm-error",
        "The server refused: instance 'job-2' is already Completed",
    )
    .await;
    page.wait_for_text("#live", "instance 'job-2' is already Completed")
        .await;
    assert_eq!(
        page.eval("return document.getElementById('confirm').open")
            .await,
        json!(true)
    );
    page.press(&[key::ESCAPE]).await;
    page.wait_for(
        "return document.getElementById('confirm').open",
        json!(false),
    )
    .await;

    // Purged once finished: gone from the list and the detail.
    page.click("#instances tbody tr[data-id='job-1']").await;
    page.wait_for(
        "return document.getElementById('detail-title').textContent",
        json!("job-1"),
    )
    .await;
    page.click("#action-purge").await;
    page.wait_for_text("#confirm-title", "Purge job-1?").await;
    page.click("#confirm-ok").await;
    page.wait_for(
        "return document.getElementById('detail').hidden",
        json!(true),
    )
    .await;
    page.wait_for(ROW_IDS, json!(["job-2"])).await;
    assert!(store.get("job-1").await.unwrap().is_none());
    page.wait_for_text("#live", "job-1 was purged").await;
}

#[tokio::test]
async fn the_detail_follows_the_push_stream_and_never_polls() {
    let Some(browser) = browser_or_skip("the_detail_follows_the_push_stream_and_never_polls")
    else {
        return;
    };
    let served = serve(vec![]).await;
    let store = &served.store;
    store
        .create(
            NewInstance::new("live-job", "EncodeVideo")
                .status(RuntimeStatus::Running)
                .input_value(&json!({"file": "movie.mkv"}))
                .unwrap(),
        )
        .await
        .unwrap();
    running(store, "other-job", "ImportCustomers").await;
    store
        .set_custom_status(
            "live-job",
            Some(&custom(json!({"progress": 0.2, "stage": "encoding"}))),
        )
        .await
        .unwrap();

    let page = browse(&browser, "live", Window::DESKTOP).await;
    page.open(&format!("{}/?instance=live-job", served.base))
        .await;
    page.wait_for(
        "return document.getElementById('progress').getAttribute('aria-valuenow')",
        json!("20"),
    )
    .await;
    page.wait_for_text("#input", "movie.mkv").await;
    page.wait_for_text("#stream-state", "Live").await;
    let opened = served.lines();
    assert_eq!(
        opened.iter().filter(|l| is_get_of(l, "live-job")).count(),
        1,
        "one read for the input: {opened:?}"
    );
    assert_eq!(
        opened
            .iter()
            .filter(|l| is_events_of(l, "live-job"))
            .count(),
        1,
        "{opened:?}"
    );

    // Each change of the custom status arrives over the stream.
    store
        .set_custom_status(
            "live-job",
            Some(&custom(json!({"progress": 0.75, "stage": "encoding"}))),
        )
        .await
        .unwrap();
    page.wait_for(
        "return document.getElementById('progress').getAttribute('aria-valuenow')",
        json!("75"),
    )
    .await;
    page.wait_for(
        "return document.querySelector('#progress .fill').style.width",
        json!("75%"),
    )
    .await;
    page.wait_for(
        "return document.querySelector('#instances tr[data-id=\"live-job\"] .bar').getAttribute('aria-valuenow')",
        json!("75"),
    )
    .await;
    store
        .set_custom_status("live-job", Some(&custom(json!({"done": 9, "total": 10}))))
        .await
        .unwrap();
    page.wait_for_text("#progress-text", "9 of 10 (90%)").await;
    store
        .set_custom_status(
            "live-job",
            Some(&custom(json!({"nextActions": ["A", "B", "C"], "foo": 2}))),
        )
        .await
        .unwrap();
    page.wait_for(
        "return [...document.querySelectorAll('#next-actions li')].map(li => li.textContent).join()",
        json!("A,B,C"),
    )
    .await;
    page.wait_for(
        "return document.getElementById('progress-block').hidden",
        json!(true),
    )
    .await;
    page.wait_for(
        "return JSON.parse(document.getElementById('custom-status').textContent).foo",
        json!(2),
    )
    .await;
    store
        .set_custom_status("live-job", Some(&custom(json!("copying"))))
        .await
        .unwrap();
    page.wait_for(
        "return document.getElementById('custom-status').textContent",
        json!("\"copying\""),
    )
    .await;
    page.wait_for(
        "return document.getElementById('actions-block').hidden",
        json!(true),
    )
    .await;

    // None of it was polled: no read of the instance, no new stream.
    let during = served.lines();
    assert!(
        !during
            .iter()
            .any(|l| is_get_of(l, "live-job") || is_events_of(l, "live-job")),
        "the page polled: {during:?}"
    );

    // The end: the final status, and the stream is over.
    store
        .complete(
            "live-job",
            Some(durable_status::JsonText::from_value(&json!({"frames": 1200})).unwrap()),
        )
        .await
        .unwrap();
    page.wait_for(
        "return document.getElementById('detail-status').textContent",
        json!("Completed"),
    )
    .await;
    page.wait_for_text("#output", "1200").await;
    page.wait_for_text("#stream-state", "Finished: Completed")
        .await;
    page.wait_for_text("#live", "live-job is now Completed")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = served.lines();
    assert!(
        !after
            .iter()
            .any(|l| is_get_of(l, "live-job") || is_events_of(l, "live-job")),
        "nothing follows the end: {after:?}"
    );
}

#[tokio::test]
async fn a_hidden_tab_pauses_the_stream_and_resumes_after_the_last_event() {
    let Some(browser) =
        browser_or_skip("a_hidden_tab_pauses_the_stream_and_resumes_after_the_last_event")
    else {
        return;
    };
    let served = serve(vec![]).await;
    let store = &served.store;
    running(store, "paused-job", "Work").await;
    store
        .set_custom_status("paused-job", Some(&custom(json!(0.1))))
        .await
        .unwrap();

    let page = browse(&browser, "hidden", Window::DESKTOP).await;
    page.open(&format!("{}/?instance=paused-job", served.base))
        .await;
    page.wait_for_text("#stream-state", "Live").await;
    page.wait_for(
        "return document.getElementById('progress').getAttribute('aria-valuenow')",
        json!("10"),
    )
    .await;
    served.front.take_request_heads();

    // Hidden: the stream is closed, and nothing is asked.
    page.eval(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
         Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
         document.dispatchEvent(new Event('visibilitychange'));",
    )
    .await;
    page.wait_for_text("#stream-state", "Paused").await;
    store
        .set_custom_status("paused-job", Some(&custom(json!(0.6))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        page.eval("return document.getElementById('progress').getAttribute('aria-valuenow')")
            .await,
        json!("10")
    );
    assert!(served.front.take_request_heads().is_empty());

    // Shown again: the stream resumes after the last event it had.
    page.eval(
        "delete document.hidden; delete document.visibilityState;
         document.dispatchEvent(new Event('visibilitychange'));",
    )
    .await;
    page.wait_for(
        "return document.getElementById('progress').getAttribute('aria-valuenow')",
        json!("60"),
    )
    .await;
    let heads = served.front.take_request_heads();
    let resumed = heads
        .iter()
        .find(|h| is_events_of(&h.line, "paused-job"))
        .expect("the stream is opened again");
    assert!(
        resumed
            .header("last-event-id")
            .is_some_and(|id| !id.is_empty()),
        "{resumed:?}"
    );
    assert!(
        !heads.iter().any(|h| is_get_of(&h.line, "paused-job")),
        "{heads:?}"
    );
}

#[tokio::test]
async fn a_stream_refused_at_the_viewer_limit_is_retried_later() {
    let Some(browser) = browser_or_skip("a_stream_refused_at_the_viewer_limit_is_retried_later")
    else {
        return;
    };
    // One instance watched at a time.
    let served = serve_with(vec![], |api| api.max_watched_instances(1)).await;
    let store = &served.store;
    running(store, "watched-elsewhere", "Work").await;
    running(store, "wanted", "Work").await;
    store
        .set_custom_status("wanted", Some(&custom(json!(0.3))))
        .await
        .unwrap();

    // Another viewer holds the server's one watch.
    let mut other = reqwest::get(format!(
        "{}{BASE}/instances/watched-elsewhere/events",
        served.base
    ))
    .await
    .unwrap();
    assert_eq!(other.status(), 200);
    other.chunk().await.unwrap().expect("the first event");

    let page = browse(&browser, "refused", Window::DESKTOP).await;
    page.open(&format!("{}/?instance=wanted", served.base))
        .await;
    // The server's reason is shown, and a retry is planned (after the
    // server's Retry-After).
    page.wait_for_text("#stream-state", "retry later").await;
    page.wait_for_text("#stream-state", "Reconnecting in 5 s")
        .await;
    page.wait_for_text(
        "#live",
        "Live updates interrupted: this server already watches 1 instances",
    )
    .await;
    // The detail still shows what was read.
    page.wait_for(
        "return document.getElementById('progress').getAttribute('aria-valuenow')",
        json!("30"),
    )
    .await;
    drop(other);
    page.wait_for_text("#stream-state", "Live").await;
    store
        .set_custom_status("wanted", Some(&custom(json!(0.5))))
        .await
        .unwrap();
    page.wait_for(
        "return document.getElementById('progress').getAttribute('aria-valuenow')",
        json!("50"),
    )
    .await;
}

#[tokio::test]
async fn a_stream_the_server_closes_is_resumed_after_the_last_event() {
    let Some(browser) =
        browser_or_skip("a_stream_the_server_closes_is_resumed_after_the_last_event")
    else {
        return;
    };
    // Connections are closed after 4 s: the stream's too.
    let served = serve_with(vec![], |api| {
        api.max_connection_age(Duration::from_secs(4))
            .shutdown_grace(Duration::from_millis(200))
    })
    .await;
    let store = &served.store;
    running(store, "wanted", "Work").await;
    store
        .set_custom_status("wanted", Some(&custom(json!(0.3))))
        .await
        .unwrap();
    let page = browse(&browser, "closed", Window::DESKTOP).await;
    page.open(&format!("{}/?instance=wanted", served.base))
        .await;
    page.wait_for_text("#stream-state", "Live").await;
    page.wait_for(
        "return document.getElementById('progress').getAttribute('aria-valuenow')",
        json!("30"),
    )
    .await;
    served.front.take_request_heads();
    served.lines();

    // The page opens it again after the last event it had, and follows on.
    let deadline = Instant::now() + Duration::from_secs(20);
    let resumed = loop {
        let heads = served.front.take_request_heads();
        if let Some(head) = heads.into_iter().find(|h| is_events_of(&h.line, "wanted")) {
            break head;
        }
        assert!(Instant::now() < deadline, "the stream is not opened again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        resumed
            .header("last-event-id")
            .is_some_and(|id| !id.is_empty()),
        "{resumed:?}"
    );
    page.wait_for_text("#stream-state", "Live").await;
    store
        .set_custom_status("wanted", Some(&custom(json!(0.7))))
        .await
        .unwrap();
    page.wait_for(
        "return document.getElementById('progress').getAttribute('aria-valuenow')",
        json!("70"),
    )
    .await;
    assert!(
        !served.lines().iter().any(|l| is_get_of(l, "wanted")),
        "no read of the instance to resume"
    );
}

#[tokio::test]
async fn an_answer_for_an_instance_no_longer_selected_is_dropped() {
    let Some(browser) = browser_or_skip("an_answer_for_an_instance_no_longer_selected_is_dropped")
    else {
        return;
    };
    let served = serve(vec![]).await;
    let store = &served.store;
    for (id, input) in [("stale-a", "input of a"), ("fresh-b", "input of b")] {
        store
            .create(
                NewInstance::new(id, "Work")
                    .status(RuntimeStatus::Running)
                    .input_value(&json!(input))
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let mut held = served
        .front
        .hold_request_matching("GET", &format!("{BASE}/instances/stale-a?"));
    let page = browse(&browser, "stale", Window::DESKTOP).await;
    page.open(&format!("{}/?instance=stale-a", served.base))
        .await;
    held.reached().await;
    page.wait_for_text("#detail-title", "stale-a").await;
    // Another instance is chosen while the first one's answer is on its way.
    page.click("#instances tbody tr[data-id='fresh-b']").await;
    page.wait_for_text("#input", "input of b").await;
    held.release();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        page.eval("return [document.getElementById('detail-title').textContent, document.getElementById('input').textContent]")
            .await,
        json!(["fresh-b", "\"input of b\""])
    );
    assert_eq!(page.eval(ERRORS).await, json!([]));
}

#[tokio::test]
async fn the_list_is_used_with_the_keyboard_and_focus_shows() {
    let Some(browser) = browser_or_skip("the_list_is_used_with_the_keyboard_and_focus_shows")
    else {
        return;
    };
    let served = serve(vec![]).await;
    let store = &served.store;
    for i in 0..3 {
        running(store, &format!("key-{i}"), "Work").await;
    }
    let page = browse(&browser, "keyboard", Window::DESKTOP).await;
    page.open(&format!("{}/", served.base)).await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(3),
    )
    .await;
    let rows: Vec<String> = serde_json::from_value(page.eval(ROW_IDS).await).unwrap();

    // Tab reaches every control, the list included, in one stop.
    page.eval("document.activeElement && document.activeElement.blur(); window.focus();")
        .await;
    let mut reached = Vec::new();
    for _ in 0..40 {
        page.press(&[key::TAB]).await;
        let here = page
            .eval(
                "const e = document.activeElement;
                 return e.id || (e.dataset && e.dataset.id ? 'row:' + e.dataset.id : '')
                   || (e.dataset && e.dataset.status ? 'count:' + e.dataset.status : '')
                   || (e.value ? e.tagName.toLowerCase() + ':' + e.value : e.tagName.toLowerCase());",
            )
            .await;
        let here = here.as_str().unwrap_or_default().to_owned();
        if here == "row:".to_owned() + &rows[0] {
            // The focus ring shows on the row reached with the keyboard.
            assert_eq!(
                page.eval("return document.activeElement.matches(':focus-visible') && getComputedStyle(document.activeElement).outlineStyle")
                    .await,
                json!("solid")
            );
        }
        reached.push(here);
    }
    for wanted in [
        "key-button",
        "input:Running",
        "input:Canceled",
        "filter-created",
        "filter-prefix",
        "filter-name",
        "filter-clear",
        "refresh",
        "auto-refresh",
    ] {
        assert!(reached.iter().any(|r| r == wanted), "{wanted}: {reached:?}");
    }
    let row_stops = reached.iter().filter(|r| r.starts_with("row:")).count();
    assert!(row_stops >= 1, "{reached:?}");
    assert_eq!(
        reached
            .iter()
            .filter(|r| *r == &format!("row:{}", rows[1]))
            .count(),
        0,
        "one tab stop for the list: {reached:?}"
    );

    // Arrows move through the rows, Enter opens one.
    page.eval("document.querySelector('#instances tbody tr[tabindex=\"0\"]').focus();")
        .await;
    page.press(&[key::DOWN]).await;
    page.wait_for("return document.activeElement.dataset.id", json!(rows[1]))
        .await;
    page.press(&[key::DOWN, key::DOWN]).await;
    page.wait_for("return document.activeElement.dataset.id", json!(rows[2]))
        .await;
    page.press(&[key::UP]).await;
    page.wait_for("return document.activeElement.dataset.id", json!(rows[1]))
        .await;
    page.press(&[key::END]).await;
    page.wait_for("return document.activeElement.dataset.id", json!(rows[2]))
        .await;
    page.press(&[key::HOME, key::DOWN]).await;
    page.wait_for("return document.activeElement.dataset.id", json!(rows[1]))
        .await;
    assert_eq!(
        page.eval("const e = document.activeElement; return [e.matches(':focus-visible'), getComputedStyle(e).outlineStyle, getComputedStyle(e).outlineWidth];")
            .await,
        json!([true, "solid", "2px"])
    );
    page.press(&[key::ENTER]).await;
    page.wait_for(
        "return document.getElementById('detail-title').textContent",
        json!(rows[1]),
    )
    .await;
    page.wait_for(
        "return document.getElementById('detail-status').textContent",
        json!("Running"),
    )
    .await;
    page.wait_for_text("#live", &format!("Showing {}", rows[1]))
        .await;
    assert_eq!(
        page.eval("return [document.activeElement.dataset.id, document.activeElement.getAttribute('aria-current')]")
            .await,
        json!([rows[1], "true"])
    );
    // Tab goes on into the detail's actions; Escape comes back to the row.
    page.press(&[key::TAB]).await;
    page.wait_for(
        "return document.getElementById('detail').contains(document.activeElement)",
        json!(true),
    )
    .await;
    page.press(&[key::ESCAPE]).await;
    page.wait_for("return document.activeElement.dataset.id", json!(rows[1]))
        .await;
    // The action dialog is used with the keyboard too: Enter on a focused
    // action opens it, Escape closes it, and the focus returns.
    page.eval("document.getElementById('action-suspend').focus();")
        .await;
    page.press(&[key::ENTER]).await;
    page.wait_for(
        "return document.getElementById('confirm').open",
        json!(true),
    )
    .await;
    page.press(&[key::ESCAPE]).await;
    page.wait_for("return document.activeElement.id", json!("action-suspend"))
        .await;
    // The counts' buttons work from the keyboard, and keep the focus when
    // they are redrawn.
    // (The counts come with a request of their own, and the dialog just
    // closed: focus the button until the focus is on it, then the key.)
    page.wait_for(
        "const b = document.querySelector('#counts-legend button[data-status=Running]');
         if (b) b.focus();
         return document.activeElement.dataset.status || null;",
        json!("Running"),
    )
    .await;
    page.press(&[key::ENTER]).await;
    page.wait_for(
        "return document.querySelector('#filter-status input[value=Running]').checked",
        json!(true),
    )
    .await;
    page.wait_for(
        "const e = document.activeElement; return [e.dataset.status, e.getAttribute('aria-pressed')];",
        json!(["Running", "true"]),
    )
    .await;
    page.press(&[key::ENTER]).await;
    page.wait_for(
        "const e = document.activeElement; return [e.dataset.status, e.getAttribute('aria-pressed')];",
        json!(["Running", "false"]),
    )
    .await;
    // `/` goes to the instance-id filter.
    page.eval("document.activeElement.blur();").await;
    page.press(&["/"]).await;
    page.wait_for("return document.activeElement.id", json!("filter-prefix"))
        .await;
}

#[tokio::test]
async fn the_key_is_typed_once_kept_for_the_tab_and_never_in_a_url() {
    let Some(browser) =
        browser_or_skip("the_key_is_typed_once_kept_for_the_tab_and_never_in_a_url")
    else {
        return;
    };
    const KEY: &str = "page-secret-4711";
    let served = serve(vec![Secret::new(KEY)]).await;
    running(&served.store, "keyed-job", "Work").await;

    let page = browse(&browser, "key", Window::DESKTOP).await;
    page.open(&format!("{}/", served.base)).await;
    // Refused without a key: the page asks for one, and shows no rows.
    page.wait_for(
        "return document.getElementById('key-dialog').open",
        json!(true),
    )
    .await;
    page.wait_for_text("#key-why", "This server needs a key")
        .await;
    page.wait_for_text("#list-error", "valid key is required")
        .await;
    page.type_into("#key-input", "wrong").await;
    page.click("#key-save").await;
    page.wait_for(
        "return document.getElementById('key-dialog').open",
        json!(true),
    )
    .await;
    page.wait_for_text("#key-why", "The server refused this key")
        .await;
    page.eval("document.getElementById('key-input').value = '';")
        .await;
    page.type_into("#key-input", KEY).await;
    page.click("#key-save").await;
    page.wait_for(ROW_IDS, json!(["keyed-job"])).await;
    page.wait_for(
        "return document.getElementById('list-error').hidden",
        json!(true),
    )
    .await;

    // Kept for the tab: a reload asks nothing.
    page.open(&format!("{}/?instance=keyed-job", served.base))
        .await;
    page.wait_for(ROW_IDS, json!(["keyed-job"])).await;
    page.wait_for(
        "return document.getElementById('detail-status').textContent",
        json!("Running"),
    )
    .await;
    assert_eq!(
        page.eval("return document.getElementById('key-dialog').open")
            .await,
        json!(false)
    );
    assert_eq!(
        page.eval("return sessionStorage.getItem('durable-status.key')")
            .await,
        json!(KEY)
    );

    // An old link's `code` is taken out of the address.
    page.open(&format!("{}/?code={KEY}&instance=keyed-job", served.base))
        .await;
    page.wait_for(ROW_IDS, json!(["keyed-job"])).await;
    let href = page.eval("return location.href").await;
    assert!(!href.as_str().unwrap().contains(KEY), "{href}");

    // Every API request carried the key as the header, none in its URL
    // (the page's own address with `code` aside, which the page dropped).
    let heads = served.front.take_request_heads();
    let api: Vec<_> = heads.iter().filter(|h| h.line.contains(BASE)).collect();
    assert!(api.len() >= 4, "{heads:?}");
    assert!(
        api.iter().all(|h| !h.line.contains(KEY)),
        "a key in a URL: {api:?}"
    );
    let keyed = api
        .iter()
        .filter(|h| h.header("x-functions-key") == Some(KEY))
        .count();
    let unkeyed_or_wrong = api
        .iter()
        .filter(|h| h.header("x-functions-key") != Some(KEY))
        .count();
    assert!(keyed >= 3, "{api:?}");
    // The event stream too: read with fetch(), which sends headers.
    assert!(
        api.iter()
            .any(|h| is_events_of(&h.line, "keyed-job") && h.header("x-functions-key") == Some(KEY)),
        "{api:?}"
    );
    // Only the first answers (before the key was given, and the wrong one).
    assert!(unkeyed_or_wrong <= 4, "{api:?}");
    let pages: Vec<_> = heads
        .iter()
        .filter(|h| !h.line.contains(BASE) && h.line.contains(KEY))
        .map(|h| h.line.as_str())
        .collect();
    assert!(
        pages.iter().all(|l| l.starts_with("GET /?code=")),
        "{pages:?}"
    );
}

/// Where screenshots are saved to be looked at (under `target/`).
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Instances of every kind, for the screenshots.
async fn sample_instances(store: &InstanceStore) {
    store
        .create(
            NewInstance::new("encode-7f3a", "EncodeVideo")
                .status(RuntimeStatus::Running)
                .input_value(&json!({"file": "holiday.mkv", "preset": "1080p"}))
                .unwrap(),
        )
        .await
        .unwrap();
    store
        .set_custom_status(
            "encode-7f3a",
            Some(&custom(
                json!({"done": 42, "total": 120, "stage": "encoding"}),
            )),
        )
        .await
        .unwrap();
    running(store, "order-1041", "ProcessOrder").await;
    store
        .set_custom_status(
            "order-1041",
            Some(&custom(
                json!({"nextActions": ["Approve", "Ship", "Invoice"], "foo": 2}),
            )),
        )
        .await
        .unwrap();
    running(store, "import-2024-05", "ImportCustomers").await;
    store
        .set_custom_status("import-2024-05", Some(&custom(json!(0.8))))
        .await
        .unwrap();
    running(store, "report-weekly", "BuildReport").await;
    store.suspend("report-weekly").await.unwrap();
    for (id, name) in [
        ("order-1040", "ProcessOrder"),
        ("order-1039", "ProcessOrder"),
    ] {
        store.create(NewInstance::new(id, name)).await.unwrap();
        store
            .complete(
                id,
                Some(durable_status::JsonText::from_value(&json!({"shipped": true})).unwrap()),
            )
            .await
            .unwrap();
    }
    store
        .create(NewInstance::new("payment-88", "ChargeCard"))
        .await
        .unwrap();
    store.fail("payment-88", "card declined").await.unwrap();
    running(store, "cleanup-old", "Cleanup").await;
    store.terminate("cleanup-old", "replaced").await.unwrap();
    store
        .create(NewInstance::new("pending-1", "ProcessOrder"))
        .await
        .unwrap();
}

/// Saves a screenshot of the page as `{name}.png` in `dir`, and fails when
/// it looks empty or is not in the colour scheme of `window`.
async fn save_screenshot(page: &Session, dir: &std::path::Path, name: &str, window: Window) {
    // Nothing to scroll sideways, whatever is shown.
    assert_eq!(
        page.eval("return document.documentElement.scrollWidth <= window.innerWidth")
            .await,
        json!(true),
        "{name}: {} wide in {}",
        page.eval("return document.documentElement.scrollWidth")
            .await,
        window.width
    );
    let png = page.screenshot().await;
    let file = dir.join(format!("{name}.png"));
    std::fs::write(&file, &png).unwrap();
    let image = decode_png(&png);
    assert_eq!(
        (image.width, image.height),
        (window.width as usize, window.height as usize),
        "{name}: the screenshot's size"
    );
    let (ink, colours) = image.ink();
    let share = ink as f64 / image.rgba.len() as f64;
    assert!(
        share > 0.02 && colours > 30,
        "{name} looks empty: {ink} pixels of {} differ from the background, {colours} colours ({})",
        image.rgba.len(),
        file.display()
    );
    let luminance = image.mean_luminance();
    if window.dark {
        assert!(luminance < 90.0, "{name} is not dark: {luminance}");
    } else {
        assert!(luminance > 120.0, "{name} is not light: {luminance}");
    }
    eprintln!("screenshot: {}", file.display());
}

#[tokio::test]
async fn screenshots_in_light_and_dark_on_desktop_and_phone_are_not_empty() {
    let Some(browser) =
        browser_or_skip("screenshots_in_light_and_dark_on_desktop_and_phone_are_not_empty")
    else {
        return;
    };
    let served = serve(vec![]).await;
    sample_instances(&served.store).await;
    let dir = screenshot_dir();
    let shots = [
        ("desktop-light", Window::DESKTOP),
        (
            "desktop-dark",
            Window {
                dark: true,
                ..Window::DESKTOP
            },
        ),
        (
            "phone-light",
            Window {
                width: 375,
                height: 812,
                dark: false,
            },
        ),
        (
            "phone-dark",
            Window {
                width: 375,
                height: 812,
                dark: true,
            },
        ),
    ];
    for (name, window) in shots {
        let page = browse(&browser, name, window).await;
        page.open(&format!("{}/?instance=encode-7f3a", served.base))
            .await;
        assert_eq!(
            page.viewport().await.0,
            window.width,
            "{name}: the viewport's width"
        );
        page.wait_for(
            "return document.querySelectorAll('#instances tbody tr').length",
            json!(9),
        )
        .await;
        page.wait_for_text("#input", "holiday.mkv").await;
        page.wait_for(
            "return matchMedia('(prefers-color-scheme: dark)').matches",
            json!(window.dark),
        )
        .await;
        // Let the bars finish their transition.
        tokio::time::sleep(Duration::from_millis(600)).await;
        save_screenshot(&page, &dir, name, window).await;
        // A second view: the detail below the list on a phone, the
        // confirmation of an action on a desktop.
        if window.width < 500 {
            // Another instance, whose custom status is a list of actions.
            page.click("#instances tbody tr[data-id='order-1041']")
                .await;
            page.wait_for_text("#next-actions", "Ship").await;
            page.eval("document.getElementById('detail-panel').scrollIntoView();")
                .await;
            save_screenshot(&page, &dir, &format!("{name}-detail"), window).await;
        } else {
            page.click("#action-terminate").await;
            page.wait_for(
                "return document.getElementById('confirm').open",
                json!(true),
            )
            .await;
            save_screenshot(&page, &dir, &format!("{name}-confirm"), window).await;
        }
        drop(page);
    }
}

#[tokio::test]
async fn the_page_shows_a_running_instance_and_its_progress_moves() {
    let Some(browser) = browser_or_skip("the_page_shows_a_running_instance_and_its_progress_moves")
    else {
        return;
    };
    let served = serve(vec![]).await;
    let store = &served.store;
    running(store, "browser-job", "EncodeVideo").await;
    store
        .create(NewInstance::new("other-job", "ImportCustomers"))
        .await
        .unwrap();
    store
        .set_custom_status(
            "browser-job",
            Some(&custom(json!({"progress": 0.2, "stage": "encoding"}))),
        )
        .await
        .unwrap();

    let page = browse(&browser, "progress", Window::DESKTOP).await;
    page.open(&format!("{}/?instance=browser-job", served.base))
        .await;

    // It loads, lists both instances, and shows the running one.
    page.wait_for("return document.title", json!("durable-status"))
        .await;
    page.wait_for(
        "return document.querySelectorAll('#instances tbody tr').length",
        json!(2),
    )
    .await;
    page.wait_for(
        "return document.getElementById('detail-status').textContent",
        json!("Running"),
    )
    .await;
    let bar = "const b = document.getElementById('progress');
               return [b.getAttribute('role'), b.getAttribute('aria-valuemin'), b.getAttribute('aria-valuemax'), b.getAttribute('aria-valuenow'),
                       document.getElementById(b.getAttribute('aria-labelledby')).textContent];";
    page.wait_for(bar, json!(["progressbar", "0", "100", "20", "Progress"]))
        .await;
    page.wait_for(
        "return document.getElementById('progress-text').textContent",
        json!("20%"),
    )
    .await;

    // The bar moves when the custom status changes.
    store
        .set_custom_status(
            "browser-job",
            Some(&custom(json!({"progress": 0.75, "stage": "encoding"}))),
        )
        .await
        .unwrap();
    page.wait_for(bar, json!(["progressbar", "0", "100", "75", "Progress"]))
        .await;

    // Completion shows too.
    store.complete("browser-job", None).await.unwrap();
    page.wait_for(
        "return document.getElementById('detail-status').textContent",
        json!("Completed"),
    )
    .await;
}

/// A directory of its own under the system's, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "durable-status-browser-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A file in it, executable or not.
    fn file(&self, name: &str, executable: bool) -> PathBuf {
        let file = self.0.join(name);
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn programs_are_found_on_path_only_as_executable_files() {
    let first = Scratch::new("path-first");
    let second = Scratch::new("path-second");
    first.file("tool", false);
    std::fs::create_dir(first.0.join("dir")).unwrap();
    let tool = second.file("tool", true);
    let elsewhere = second.file("elsewhere", true);
    let path = std::env::join_paths([&first.0, &second.0]).unwrap();
    let path = Some(path.as_os_str());

    // Past a file that is not executable, to the next directory.
    assert_eq!(locate("tool".as_ref(), path), Some(tool));
    assert_eq!(locate("dir".as_ref(), path), None);
    assert_eq!(locate("absent".as_ref(), path), None);
    assert_eq!(locate("".as_ref(), path), None);
    assert_eq!(locate("tool".as_ref(), None), None);
    // A path is taken as it is, not looked up.
    assert_eq!(locate(elsewhere.as_os_str(), None), Some(elsewhere.clone()));
    assert_eq!(locate(first.0.join("tool").as_os_str(), path), None);
}

#[test]
fn a_missing_browser_is_named_with_what_to_install() {
    let bin = Scratch::new("find");
    let chromedriver = bin.file("chromedriver", true);
    let path = bin.0.clone().into_os_string();
    let no_variables = |_: &str| None;

    let why = find_browser(no_variables, Some(&path)).unwrap_err();
    assert!(why.contains("Chromium (no `chromium` on PATH)"), "{why}");
    assert!(!why.contains("ChromeDriver ("), "{why}");
    for advice in [
        "`chromium` and `chromium-driver`",
        CHROMEDRIVER_VARIABLE,
        CHROMIUM_VARIABLE,
    ] {
        assert!(why.contains(advice), "{why}");
    }

    // The variables name the programs, as paths or as names on PATH.
    let chromium = bin.file("my-chromium", true);
    let variables = |name: &str| match name {
        CHROMIUM_VARIABLE => Some(chromium.clone().into_os_string()),
        _ => None,
    };
    let browser = find_browser(variables, Some(&path)).unwrap();
    assert_eq!(
        (browser.chromedriver, browser.chromium),
        (chromedriver.clone(), chromium.clone())
    );
    let variables = |name: &str| match name {
        CHROMIUM_VARIABLE => Some("my-chromium".into()),
        _ => None,
    };
    assert_eq!(
        find_browser(variables, Some(&path)).unwrap().chromium,
        chromium
    );

    // A variable that names nothing is not passed over for PATH.
    bin.file("chromium", true);
    let variables = |name: &str| match name {
        CHROMEDRIVER_VARIABLE => Some("/nonexistent".into()),
        _ => None,
    };
    let why = find_browser(variables, Some(&path)).unwrap_err();
    assert!(
        why.contains("ChromeDriver (`/nonexistent`, from DURABLE_STATUS_CHROMEDRIVER"),
        "{why}"
    );
    assert!(!why.contains("Chromium ("), "{why}");
    assert!(find_browser(no_variables, Some(&path)).is_ok());
    assert!(find_browser(no_variables, None).is_err());
}

#[test]
fn only_an_empty_or_zero_value_leaves_the_browser_optional() {
    assert!(!required(None));
    assert!(!required(Some("".as_ref())));
    assert!(!required(Some("0".as_ref())));
    assert!(required(Some("1".as_ref())));
    assert!(required(Some("yes".as_ref())));
}
