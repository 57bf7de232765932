//! `tonno eval --report`: report.html opened in headless Chromium. The page
//! must render (a screenshot with more than a few colours), hold the table
//! once its script has run, show the view the address asks for, and log no
//! console message or uncaught error. Skipped without Chromium, unless
//! TONNO_REQUIRE_CHROMIUM is set (CI installs Debian's chromium).

mod common;

use std::path::Path;
use std::process::Command;

use common::tonno;

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("TONNO_REQUIRE_CHROMIUM").is_none(),
            "TONNO_REQUIRE_CHROMIUM is set but no chromium was found"
        );
        eprintln!("skipping: no chromium (apt-get install chromium)");
    }
    found
}

/// What headless Chromium made of `page#fragment`: the DOM after its
/// script ran, the screenshot, and the console lines it logged.
struct Rendered {
    dom: String,
    screenshot: Vec<u8>,
    console: Vec<String>,
}

fn render(browser: &str, page: &Path, fragment: &str, dir: &Path) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let shot = dir.join("shot.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("timeout")
        .args(["-k", "5", "120", browser])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            // Let timers and promises run before the DOM is dumped.
            "--virtual-time-budget=5000",
            // Console messages of every level, and uncaught errors, are
            // logged to stderr as INFO:CONSOLE lines.
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}{fragment}", page.display()))
        .output()
        .expect("chromium runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("Page load failed"),
        "chromium could not load {}:\n{stderr}",
        page.display()
    );
    Rendered {
        // The screenshot's "N bytes written" line comes before the DOM.
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        screenshot: std::fs::read(&shot)
            .unwrap_or_else(|e| panic!("no screenshot ({e}):\n{stderr}")),
        console: stderr
            .lines()
            .filter(|l| l.contains(":INFO:CONSOLE"))
            .map(String::from)
            .collect(),
    }
}

fn distinct_colours(png_bytes: &[u8]) -> usize {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> =
        buf[..info.buffer_size()].chunks_exact(px).collect();
    colours.len()
}

/// The `<img>` tags of the dumped DOM that are not hidden.
fn shown_images(dom: &str) -> Vec<String> {
    dom.split("<img ")
        .skip(1)
        .map(|t| t.split('>').next().unwrap().to_string())
        .filter(|t| !t.contains(" hidden"))
        .collect()
}

#[test]
fn the_html_report_renders_in_a_browser_with_its_table_and_views() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tonno(
        d,
        &[
            "synth", "--out", "data", "--cases", "6", "--size", "24", "--seed", "1",
        ],
    )
    .ok();
    // The exact Radon "encoder" needs no training: its heatmap is the scan.
    tonno(
        d,
        &[
            "segment",
            "--encoder",
            "sum",
            "--input",
            "data/imagesTr",
            "--out",
            "seg",
            "--directions",
            "16",
        ],
    )
    .ok();
    let eval = |extra: &[&str]| {
        tonno(
            d,
            &[
                &[
                    "eval",
                    "--pred",
                    "seg",
                    "--truth",
                    "data/labelsTr",
                    "--report",
                    "rep",
                    "--images",
                    "data/imagesTr",
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    eval(&[]).ok();
    let page = d.join("rep/report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("src=\"http"),
        "nothing loaded from elsewhere"
    );
    eval(&[]).fails_with(&["report.html", "--force"]);
    eval(&["--force"]).ok();

    let first = render(browser, &page, "", d);
    assert!(first.console.is_empty(), "console: {:#?}", first.console);
    let colours = distinct_colours(&first.screenshot);
    assert!(colours > 16, "a blank page? {colours} colours");
    assert!(first.dom.contains("<table id=\"results\""), "{}", first.dom);
    assert!(first.dom.contains("<td>tonno</td>"));
    // By default: the first case, the first heatmap.
    let shown = shown_images(&first.dom);
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(shown[0].contains("data-method=\"tonno\""), "{shown:?}");

    // Every case is there with the image and the heatmap, and the address
    // chooses what is shown.
    let cases: Vec<String> = std::fs::read_dir(d.join("data/labelsTr"))
        .unwrap()
        .map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.trim_end_matches(".nii.gz").to_string()
        })
        .collect();
    assert_eq!(html.matches("<img ").count(), 2 * cases.len());
    let last = cases.iter().max().unwrap();
    let chosen = render(browser, &page, &format!("#case={last}&method=image"), d);
    assert!(chosen.console.is_empty(), "console: {:#?}", chosen.console);
    let shown = shown_images(&chosen.dom);
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(
        shown[0].contains(&format!("data-case=\"{last}\" data-method=\"image\"")),
        "{shown:?}"
    );
    assert!(chosen.dom.contains(&format!("{last}: image</div>")));
}
