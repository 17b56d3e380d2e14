"""Annotations stay inside the frame and the look-alike's thumbnail is drawn as stored."""
import numpy as np

from core.draw import FaceLabel, draw_faces, thumbnail_origin

H, W = 480, 640
COLOR = np.array([230, 25, 75])  # the palette's colour for key 0


def label_extent(box, lines) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the label fill (the key's colour), the face's box left out."""
    blank = np.zeros((H, W, 3), np.uint8)
    drawn = np.all(draw_faces(blank, [FaceLabel(box, lines)]) == COLOR, axis=2)
    box_only = np.all(draw_faces(blank, [FaceLabel(box, ())]) == COLOR, axis=2)
    ys, xs = np.nonzero(drawn & ~box_only)
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_labels_at_the_frame_edge_stay_whole_inside_it():
    lines = ("#5 kit_harington", "male 31", "neutral")
    x0, y0, x1, y1 = label_extent((200.0, 100.0, 260.0, 170.0), lines)
    assert y0 > 170  # under the box where there is room
    for box in [(600.0, 100.0, 660.0, 170.0), (-30.0, 100.0, 30.0, 170.0), (300.0, 440.0, 360.0, 500.0)]:
        ex0, ey0, ex1, ey1 = label_extent(box, lines)
        # the same label, whole: nothing of it was cut by the border, no line drawn over another
        assert (ex1 - ex0, ey1 - ey0) == (x1 - x0, y1 - y0), box
        assert ex0 >= 0 and ex1 < W and ey1 < H


def test_thumbnail_is_drawn_beside_the_box_pixel_for_pixel():
    rng = np.random.default_rng(0)
    thumb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    blank = np.zeros((H, W, 3), np.uint8)
    lines = ("#1 someone with a long name",)
    for box, side in [((300, 100, 360, 170), "left"), ((20, 100, 80, 170), "right"),
                      ((0, 0, 639, 479), "inside")]:
        label = FaceLabel(tuple(map(float, box)), lines, thumbnail=thumb, thumbnail_caption="looks like obama 62 %")
        out = draw_faces(blank, [label])
        text = draw_faces(blank, [FaceLabel(tuple(map(float, box)), lines)])
        labels_end = int(np.nonzero(np.all(text == COLOR, axis=2))[1].max()) + 1
        x, y = thumbnail_origin(box, 64, (H, W), labels_end)
        assert 0 <= x <= W - 64 and 0 <= y <= H - 64
        # beside the box and clear of its label lines, which stay whole
        assert {"left": x + 64 < box[0], "right": x > labels_end, "inside": True}[side], side
        assert np.array_equal(out[y:y + 64, x:x + 64], thumb), side
        if side != "inside":
            x0, y0, x1, y1 = label_extent(tuple(map(float, box)), lines)
            assert np.array_equal(out[y0:y1 + 1, x0:x1 + 1], text[y0:y1 + 1, x0:x1 + 1]), side
        # the caption sits over (or, at the top edge, under) the thumbnail, in the track's colour
        caption = out[y - 20:y - 1, x:x + 64] if y >= 20 else out[y + 65:y + 85, x:x + 64]
        assert np.all(caption == COLOR, axis=2).mean() > 0.3, side


def test_a_view_only_sink_draws_the_frame_and_writes_no_file(tmp_path, monkeypatch):
    """`video` off with a live view: the view still gets the annotated frame; no file is made."""
    import cv2

    from actors.sinks import AnnotatedVideo

    monkeypatch.chdir(tmp_path)
    sink = AnnotatedVideo(None, 25.0)
    jpeg = sink.write(np.zeros((H, W, 3), np.uint8), [FaceLabel((200.0, 100.0, 260.0, 170.0), ("#1",))], None,
                      jpeg=True)
    shown = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert shown.shape == (H, W, 3) and np.abs(shown[100, 230].astype(int) - COLOR).max() < 40  # the box's top edge
    assert sink.close() == 0 and not list(tmp_path.iterdir())
