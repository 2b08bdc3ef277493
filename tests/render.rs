//! `GET /v1/twins/{id}/render`: a running twin drawn by the node's render
//! workers, its labels checked against where `GET /observation` puts the
//! bodies, and bad requests refused by name.

mod common;

use common::{TestNode, repo};
use hanzo_twin_render::CameraView;
use serde_json::Value;

fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes.to_vec()));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("pixels");
    (info, buf)
}

fn base64_png(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 text"))
        .expect("base64")
}

#[tokio::test]
async fn a_twin_is_drawn_where_its_observation_puts_the_bodies() {
    let node = TestNode::start().await;
    let belt = node.create_sample("conveyor.yaml", "drawn-belt").await;
    // Not running: nothing to draw, with the reason.
    let (status, v) = node
        .get(&format!("/v1/twins/{belt}/render?camera=/World/Camera"))
        .await;
    assert_eq!(status, 409, "{v}");
    node.start_twin(&belt, "paused").await;
    // Half a second in: the boxes are falling, each at its own height.
    node.step(&belt, 60).await;

    let (w, h) = (320u32, 240u32);
    let (status, frame) = node
        .get(&format!(
            "/v1/twins/{belt}/render?camera=/World/Camera&outputs=rgb,depth,instance,semantic&width={w}&height={h}"
        ))
        .await;
    assert_eq!(status, 200, "{frame}");
    assert_eq!(frame["step"], 60);
    let classes: Vec<&str> = frame["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| c.as_str().expect("name"))
        .collect();
    assert_eq!(classes, ["box", "conveyor"]);

    let scene =
        hanzo_twin::engines::usd::load_scene(&repo().join("configs/scenes/conveyor/scene.usda"))
            .expect("the sample scene");
    let view = CameraView::from_scene(&scene, "/World/Camera", w, h, None).expect("its camera");
    let (_, observed) = node.get(&format!("/v1/twins/{belt}/observation")).await;
    let (depth_info, depth) = decode(&base64_png(&frame["images"]["depth"]));
    assert_eq!((depth_info.width, depth_info.height), (w, h));
    let (_, ids) = decode(&base64_png(&frame["images"]["instance"]));
    let mut checked = 0;
    for body in observed["bodies"].as_array().expect("bodies") {
        let path = body["path"].as_str().expect("path");
        if !path.starts_with("/World/Boxes/") {
            continue;
        }
        let centre: Vec<f64> = body["position"]
            .as_array()
            .expect("position")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect();
        let (u, v, z) = view
            .project([centre[0], centre[1], centre[2]])
            .expect("in front");
        if !(0.0..f64::from(w)).contains(&u) || !(0.0..f64::from(h)).contains(&v) {
            continue;
        }
        let label = frame["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("{path} projects into the image but has no label: {frame}"));
        assert_eq!(label["class"], "box", "{label}");
        let b: Vec<f64> = label["bbox_loose"]
            .as_array()
            .expect("a box")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect();
        assert!(
            b[0] - 1.0 <= u && u <= b[2] + 1.0 && b[1] - 1.0 <= v && v <= b[3] + 1.0,
            "{path}: centre at ({u:.1}, {v:.1}) outside its box {b:?}"
        );
        // Where the box itself is seen at its centre's pixel, its surface is
        // in front of the centre by less than its half diagonal.
        let (px, py) = (u as usize, v as usize);
        let i = py * w as usize + px;
        let id = u16::from_be_bytes([ids[2 * i], ids[2 * i + 1]]);
        if u64::from(id) == label["id"].as_u64().expect("id") {
            let d = f64::from(u16::from_be_bytes([depth[2 * i], depth[2 * i + 1]]))
                * frame["depth_scale_m"].as_f64().expect("scale");
            assert!(
                d <= z + 0.002 && d >= z - 0.18,
                "{path}: depth {d} vs centre {z}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} boxes in view");

    // One output: a PNG of its own.
    let response = node
        .http
        .get(node.url(&format!(
            "/v1/twins/{belt}/render?camera=/World/Camera&width=64&height=48"
        )))
        .send()
        .await
        .expect("render");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let (info, _) = decode(&response.bytes().await.expect("body"));
    assert_eq!(
        (info.width, info.height, info.color_type),
        (64, 48, png::ColorType::Rgb)
    );
}

#[tokio::test]
async fn bad_render_requests_are_refused_by_name() {
    let node = TestNode::start().await;
    let belt = node.create_sample("conveyor.yaml", "refusing-belt").await;
    node.start_twin(&belt, "paused").await;
    for (query, field) in [
        ("camera=/World/Camera&outputs=rgb,x-ray", "outputs"),
        ("camera=/World/Camera&width=wide", "width"),
        ("camera=/World/Camera&height=0", "height"),
        ("camera=/World/Camera&width=5000", "width"),
        ("camera=/World/Camera&spp=0", "samples_per_pixel"),
        (
            "camera=/World/Camera&outputs=rgb,depth&format=png",
            "format",
        ),
        ("camera=/World/Camera&format=gif", "format"),
        ("eye=1,2&look_at=0,0,0", "eye"),
        ("eye=1,2,nan&look_at=0,0,0", "eye"),
        ("eye=0,0,1&look_at=0,0,1", "look_at"),
        ("camera=/World/Camera&eye=1,1,1&look_at=0,0,0", "camera"),
        ("eye=1,1,1", "camera"),
        ("camera=/World/NoSuchCamera", "camera"),
    ] {
        let (status, v) = node.get(&format!("/v1/twins/{belt}/render?{query}")).await;
        assert!((400..500).contains(&status), "{query}: {status} {v}");
        assert_eq!(v["error"]["field"], field, "{query}: {v}");
    }
    // A camera placed by the caller works without one in the scene.
    let (status, v) = node
        .get(&format!(
            "/v1/twins/{belt}/render?eye=3,-3,2&look_at=0,0,0.5&outputs=instance&format=json&width=80&height=60"
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .any(|l| l["path"] == "/World/Conveyor"),
        "{v}"
    );
}
