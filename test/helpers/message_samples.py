"""Known message contents shared by the message tests and their child process."""
import math

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sparsecomp.msg import CameraHealth, CameraStatus, DynamicObject, DynamicObjectArray
from std_msgs.msg import Header

STAMP = Time(sec=1_700_000_123, nanosec=456_789_000)


def sample_object_array() -> DynamicObjectArray:
    yaw = 0.3
    car = DynamicObject(
        id=2**40 + 7, label=DynamicObject.CLASS_CAR, score=0.91,
        class_probabilities=[0.91, 0.05, 0.01, 0.0, 0.0, 0.0, 0.0, 0.02],
        pose=Pose(position=Point(x=12.5, y=-3.25, z=0.9),
                  orientation=Quaternion(z=math.sin(yaw / 2), w=math.cos(yaw / 2))),
        size=Vector3(x=4.6, y=1.9, z=1.6),
        velocity=Vector3(x=8.0, y=-0.5, z=0.0),
        occlusion=DynamicObject.OCCLUSION_PARTIAL,
        occlusion_probabilities=[0.1, 0.2, 0.6, 0.1])
    pillar = DynamicObject(
        id=3, label=DynamicObject.CLASS_PILLAR, score=0.4,
        pose=Pose(position=Point(x=-5.0, y=7.0, z=0.5)),
        size=Vector3(x=0.3, y=0.3, z=1.0),
        occlusion=DynamicObject.OCCLUSION_HEAVY)
    return DynamicObjectArray(header=Header(stamp=STAMP, frame_id="base_link"),
                              failed_cameras=["CAM_BACK"], objects=[car, pillar])


def sample_camera_health() -> CameraHealth:
    ok = CameraStatus(name="CAM_FRONT_WIDE", failed=False, reason=CameraStatus.FAULT_NONE,
                      rate_hz=10.0, mean_intensity=0.45, consecutive_ok=12)
    black = CameraStatus(name="CAM_BACK", failed=True, reason=CameraStatus.FAULT_BLACK,
                         message="mean intensity 0.003 < 0.02", mean_intensity=0.003,
                         dark_fraction=0.999, image_age_s=float("nan"), consecutive_faults=4)
    return CameraHealth(header=Header(stamp=STAMP, frame_id="base_link"), cameras=[ok, black])
