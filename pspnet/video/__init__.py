"""Videos, cameras and streams: segmentations frame by frame, an overlay video, label PNGs.

- :mod:`.sources`: :class:`VideoSource`, a file, camera or rtsp/http(s) stream opened with
  OpenCV's FFmpeg backend, and the frames a selection keeps (``every``, ``start``,
  ``duration``, ``max_frames``), with a stall guard for live sources (a reader thread,
  :mod:`.readahead`);
- :mod:`.frames`: :func:`segment_video`, the Python API (one :class:`VideoFrame` per kept
  frame, from ``Segmenter.segment``), and the opt-in temporal smoothing;
- :mod:`.writer`: :class:`VideoOutputs`, the overlay video and label PNGs, written whole or
  not at all.

What ``pspnet predict`` does with a video is :func:`pspnet.predict.video.predict_video`.

```python
seg = pspnet.Segmenter.from_checkpoint("best.safetensors")
for frame in pspnet.video.segment_video(seg, "clip.mp4", every=2):  # import pspnet.video
    print(frame.index, frame.time, frame.segmentation.shares())
```
"""

from pspnet.video.frames import ProbabilityAverage, VideoFrame, segment_frames, segment_video
from pspnet.video.sources import StreamStalled, VideoSource, is_video, parse_source
from pspnet.video.writer import VideoOutputs, video_codec

__all__ = [
    "ProbabilityAverage",
    "StreamStalled",
    "VideoFrame",
    "VideoOutputs",
    "VideoSource",
    "is_video",
    "parse_source",
    "segment_frames",
    "segment_video",
    "video_codec",
]
