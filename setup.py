"""pip install of the Python parts of sparsecomp (``pip install -e .``).

The ROS 2 build (messages, executables, launch and config files) is in
CMakeLists.txt / package.xml; scripts/setup_env.sh does both for a venv.
"""
from setuptools import find_packages, setup

setup(
    # Not "sparsecomp": that distribution name belongs to the rosidl-generated
    # message package installed into the same site-packages.
    name="sparsecomp-perception",
    version="0.1.0",
    description="Camera-failure-robust 3D dynamic-object detection for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sparsecomp_core", "sparsecomp_core.*",
                                    "sparsecomp_ros", "sparsecomp_ros.*"]),
    # rclpy and the message packages come from a ROS 2 install or from the
    # ROS 2 PyPI wheels in requirements.txt; torch is chosen per machine
    # (CPU wheel or CUDA build) by scripts/setup_env.sh.
    install_requires=["numpy", "scipy", "PyYAML", "tqdm", "rosbags", "Pillow",
                      "opencv-python-headless"],
    entry_points={"console_scripts": [
        "sparsecomp-generate = sparsecomp_core.data.synthetic.generate:main",
        "sparsecomp-train = sparsecomp_core.training.train:main",
        "sparsecomp-evaluate = sparsecomp_core.evaluation.evaluate:main",
        "sparsecomp-perception = sparsecomp_ros.perception_node:main",
        "sparsecomp-replay = sparsecomp_ros.replay:main",
        "sparsecomp-bag-convert = sparsecomp_ros.bag_convert:main",
        "sparsecomp-demo = sparsecomp_ros.demo:main",
    ]},
)
