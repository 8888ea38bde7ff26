//! Conversions between ROS message fields and the library's plain types.

use r2r::builtin_interfaces::msg::{Duration as DurationMsg, Time};

pub fn seconds_of(t: &Time) -> f64 {
    f64::from(t.sec) + f64::from(t.nanosec) * 1e-9
}

pub fn time_msg(seconds: f64) -> Time {
    let s = seconds.max(0.0);
    let mut sec = s.floor();
    let mut nanosec = ((s - sec) * 1e9).round();
    if nanosec >= 1e9 {
        sec += 1.0;
        nanosec -= 1e9;
    }
    Time {
        sec: sec as i32,
        nanosec: nanosec as u32,
    }
}

pub fn duration_msg(seconds: f64) -> DurationMsg {
    let t = time_msg(seconds);
    DurationMsg {
        sec: t.sec,
        nanosec: t.nanosec,
    }
}

pub fn rgb_image(
    stamp: f64,
    frame_id: &str,
    width: usize,
    height: usize,
    data: &[u8],
) -> r2r::sensor_msgs::msg::Image {
    r2r::sensor_msgs::msg::Image {
        header: r2r::std_msgs::msg::Header {
            stamp: time_msg(stamp),
            frame_id: frame_id.to_string(),
        },
        height: height as u32,
        width: width as u32,
        encoding: "rgb8".to_string(),
        is_bigendian: 0,
        step: (width * 3) as u32,
        data: data.to_vec(),
    }
}
