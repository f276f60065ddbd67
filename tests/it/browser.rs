//! The console in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`)
//! driven through WebDriver. Log in, watch an event arrive and open its evidence, requeue a dead
//! letter, use the playground. On failure a screenshot is saved under `target/browser-failures/`.
//!
//! Without Chromium these tests say so and pass, except under `CI=true`, where they fail: CI must
//! run them (`.ci/run` installs the packages).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::http::Method;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::console::TOKEN;
use crate::support::{
    api_ticket, count, event_body, free_port, spawn_app_with, wait_listening, Options, TestApp,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "chromedriver";

/// The WebDriver server, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A browser session, or `None` (with the reason printed) when Chromium is not installed and
/// this is not CI.
async fn browser() -> Option<(Driver, Client)> {
    let installed = std::path::Path::new(CHROMIUM).exists()
        && Command::new(DRIVER)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var("CI").is_err(),
            "the browser tests need {CHROMIUM} and {DRIVER} (Debian: apt-get install chromium chromium-driver); .ci/run installs them"
        );
        eprintln!("SKIPPED: browser test without Chromium; install Debian's chromium and chromium-driver to run it");
        return None;
    }
    let port = free_port();
    let child = Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    wait_listening(port).await;
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    Some((driver, client))
}

type Step = Result<(), String>;

fn check(ok: bool, what: &str) -> Step {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

fn wd<T>(r: Result<T, impl std::fmt::Display>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Runs `steps`; on failure saves a screenshot and the page, then fails the test.
async fn run(name: &str, c: &Client, steps: impl std::future::Future<Output = Step>) {
    let result = steps.await;
    if let Err(e) = result {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-failures");
        let _ = std::fs::create_dir_all(&dir);
        let shot = dir.join(format!("{name}.png"));
        if let Ok(png) = c.screenshot().await {
            let _ = std::fs::write(&shot, png);
        }
        if let Ok(html) = c.source().await {
            let _ = std::fs::write(dir.join(format!("{name}.html")), html);
        }
        let _ = c.clone().close().await;
        panic!("{name}: {e} (screenshot: {})", shot.display());
    }
    let _ = c.clone().close().await;
}

/// Polls the page (reloading it) until `text` shows.
async fn until_shown(c: &Client, url: &str, text: &str) -> Step {
    for _ in 0..50 {
        wd(c.goto(url).await, "open")?;
        if wd(c.source().await, "read")?.contains(text) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{text:?} never showed on {url}"))
}

/// Clicks what `css` finds and waits until the browser has left the page for one whose path and
/// query end with `then`: the form's answer has arrived, so nothing navigates away mid-flight.
async fn click_to(c: &Client, css: &str, then: &str) -> Step {
    let before = wd(c.current_url().await, "url")?;
    wd(c.find(Locator::Css(css)).await, css)?
        .click()
        .await
        .map_err(|e| format!("click {css}: {e}"))?;
    for _ in 0..100 {
        let url = wd(c.current_url().await, "url")?;
        let at = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        let at = at.trim_end_matches('?');
        if at.ends_with(then) && (url != before || at.ends_with("/playground")) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("after clicking {css}, never reached {then}"))
}

async fn log_in(c: &Client, base: &str) -> Step {
    wd(c.goto(&format!("{base}/admin")).await, "open the console")?;
    check(
        wd(c.current_url().await, "url")?.path() == "/admin/login",
        "sent to the login form",
    )?;
    let field = wd(c.find(Locator::Id("token")).await, "the token field")?;
    wd(field.send_keys(TOKEN).await, "type the token")?;
    click_to(c, "form.login button", "/admin").await?;
    let h1 = wd(c.find(Locator::Css("h1")).await, "a heading")?;
    check(
        wd(h1.text().await, "heading")? == "Overview",
        "the overview's heading",
    )
}

async fn app() -> TestApp {
    spawn_app_with(Options {
        admin_token: Some(TOKEN),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_an_event_arrive_and_reads_its_evidence() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let app = app().await;
    let base = format!("http://{}", app.addr);
    app.zendesk
        .put_ticket(api_ticket(61, "URGENT: orders stopped"));
    let steps = async {
        log_in(&c, &base).await?;
        let r = app
            .post_signed(event_body("ev-b1", "created", 61, "URGENT: orders stopped"))
            .await;
        check(r.status() == 202, "the webhook is stored")?;
        until_shown(
            &c,
            &format!("{base}/admin/activity?kind=created"),
            "updated",
        )
        .await?;
        click_to(&c, "table.activity tbody tr td a", "/admin/events/1").await?;
        let mark = wd(
            c.find(Locator::Css("a.evidence mark")).await,
            "highlighted evidence",
        )?;
        check(
            wd(mark.text().await, "mark")? == "URGENT",
            "the matched word is highlighted",
        )?;
        let link = wd(c.find(Locator::Css("a.evidence")).await, "evidence link")?;
        let href = wd(link.attr("href").await, "href")?.unwrap_or_default();
        check(href == "#rule-0", "the evidence links to its rule")?;
        let rule = wd(c.find(Locator::Css("li#rule-0 strong")).await, "the rule")?;
        check(
            wd(rule.text().await, "rule")? == "urgent-subject",
            "the rule's name",
        )
    };
    run("event_evidence", &c, steps).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_requeues_a_dead_letter() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let app = app().await;
    let base = format!("http://{}", app.addr);
    app.zendesk.put_ticket(api_ticket(62, "URGENT: payments"));
    app.zendesk.fail_next(Method::PUT, 1, 400, None);
    let steps = async {
        log_in(&c, &base).await?;
        let r = app
            .post_signed(event_body("ev-b2", "created", 62, "URGENT: payments"))
            .await;
        check(r.status() == 202, "the webhook is stored")?;
        until_shown(
            &c,
            &format!("{base}/admin/activity?result=dead"),
            "/admin/events/",
        )
        .await?;
        click_to(&c, "table.activity tbody tr td a", "/admin/events/1").await?;
        click_to(&c, "form[action$='/requeue'] button", "/requeue").await?;
        let confirm = wd(
            c.find(Locator::Css("main form button")).await,
            "the confirmation",
        )?;
        check(
            wd(confirm.text().await, "confirm")? == "Yes, requeue",
            "asked first",
        )?;
        check(
            count(&app.db, "SELECT COUNT(*) FROM events WHERE state = 'dead'") == 1,
            "not requeued before the answer",
        )?;
        click_to(&c, "main form button", "/admin/activity?ticket=62").await?;
        until_shown(
            &c,
            &format!("{base}/admin/activity?ticket=62"),
            "result updated",
        )
        .await?;
        check(
            app.zendesk.ticket(62)["priority"] == "urgent",
            "the ticket is updated",
        )
    };
    run("requeue_dead_letter", &c, steps).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_author_tries_a_ticket_in_the_playground() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let app = app().await;
    let base = format!("http://{}", app.addr);
    let steps = async {
        log_in(&c, &base).await?;
        wd(
            c.goto(&format!("{base}/admin/playground")).await,
            "open the playground",
        )?;
        let subject = wd(c.find(Locator::Id("subject")).await, "subject")?;
        wd(subject.send_keys("URGENT: checkout is down").await, "type")?;
        click_to(&c, "form.playground > button", "/admin/playground").await?;
        wd(
            c.wait()
                .at_most(Duration::from_secs(10))
                .for_element(Locator::Css("section.result"))
                .await,
            "the result",
        )?;
        let decision = wd(
            c.find(Locator::Css("section.result p.big")).await,
            "the decision",
        )?;
        let text = wd(decision.text().await, "decision")?;
        check(
            text.starts_with("urgent"),
            &format!("decided urgent, not {text:?}"),
        )?;
        let mark = wd(
            c.find(Locator::Css("section.result a.evidence mark")).await,
            "evidence",
        )?;
        check(
            wd(mark.text().await, "mark")? == "URGENT",
            "the evidence is highlighted",
        )
    };
    run("playground", &c, steps).await;
    app.stop().await;
}
