"""facelive gallery: the known people that identity search answers with, kept in a directory.

  import FOLDER          enrol every image of FOLDER/<person>/ (one sub-folder per person)
  enrol NAME IMAGE...    enrol images (or folders of images) as NAME
  list                   people, embeddings each, watchlist flag (--thumbnails DIR: write each
                         embedding's thumbnail as DIR/<person>/<n>.png)
  remove NAME            forget NAME and all their embeddings
  watch NAME / unwatch NAME
  search IMAGE...        the best match of every face, or unknown above the threshold

Each enrolment image gives one embedding: its largest face, with a small thumbnail of it. An
image that cannot be read or shows no face is named on stderr with the reason and the rest go on;
an image whose content the gallery already holds is left as it is and counted, so importing the
same folder twice changes nothing. Distances are on the
identity model's published scale (dlib's); the default threshold, 0.55, is a little stricter than
dlib's 0.6 (why: core/gallery.py, GalleryConfig).
Exit status: 0 all good, 1 some images were skipped, 2 the command could not run (bad usage,
no or damaged gallery, unknown name, nothing to enrol)."""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.gallery import GalleryConfig, GalleryError, GalleryIndex  # noqa: E402
from core.media import DEFAULT_MAX_PIXELS, MediaError, iter_image_files, load_image  # noqa: E402
from models.analyzer import FaceAnalyzer  # noqa: E402
from models.detector import DetectorConfig  # noqa: E402
from models.enrolment import (  # noqa: E402
    EnrolmentError,
    PersonImage,
    enrol,
    gallery_config,
    person_images,
)
from models.entry import ModelEntryError  # noqa: E402
from models.files import ModelFileError  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402


class CommandError(Exception):
    """The command cannot run; the message says why."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="launch/gallery.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=Path, required=True, help="gallery directory")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per model library")
    p.add_argument("--max-side", type=int, default=640,
                   help="longest image side the detector sees; raise it for small faces in big photos")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS:,})")
    commands = p.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int],
                summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(run=run)
        return sub

    import_cmd = command("import", import_folder,
                         "enrol FOLDER/<person>/* as <person>, creating the gallery if needed")
    import_cmd.add_argument("folder", type=Path, help="folder with one sub-folder of images per person")
    enrol_cmd = command("enrol", enrol_images, "enrol images as one person, creating the gallery if needed")
    enrol_cmd.add_argument("name", help="the person's name")
    enrol_cmd.add_argument("images", nargs="+", help="image files or folders of them")
    list_cmd = command("list", list_people, "list people, their embedding count and watchlist flag")
    list_cmd.add_argument("--thumbnails", type=Path, metavar="DIR",
                          help="also write each embedding's thumbnail to DIR/<person>/<n>.png (mode 0600)")
    for name, run, summary in [("remove", remove, "forget a person and all their embeddings"),
                               ("watch", watch, "put a person on the watchlist"),
                               ("unwatch", unwatch, "take a person off the watchlist")]:
        command(name, run, summary).add_argument("name", help="the person's name")
    search_cmd = command("search", search, "name every face in the images, or say it is unknown")
    search_cmd.add_argument("images", nargs="+", help="image files or folders of them")
    search_cmd.add_argument("--threshold", type=float, default=GalleryConfig().threshold,
                            help="distance above which a face is unknown (default %(default)s)")
    return p.parse_args(argv)


def load_analyzer(args: argparse.Namespace) -> FaceAnalyzer:
    return FaceAnalyzer(ModelRegistry(), tasks=("identity",), threads=args.threads,
                        config=DetectorConfig(max_side=args.max_side))


def open_gallery(args: argparse.Namespace, config: GalleryConfig | None = None,
                 create: bool = False) -> GalleryIndex:
    if not create and not os.path.isdir(args.gallery):
        raise CommandError(f"{args.gallery}: no gallery there (create one with import or enrol)")
    return GalleryIndex.load(args.gallery, config, missing_ok=create)


def known(gallery: GalleryIndex, name: str, directory: Path) -> str:
    if name not in gallery:
        raise CommandError(f"no person named {name!r} in the gallery {directory}")
    return name


def enrol_and_save(args: argparse.Namespace, images: list[PersonImage]) -> int:
    analyzer = load_analyzer(args)
    gallery = open_gallery(args, gallery_config(analyzer), create=True)
    bar = tqdm(images, unit="image", desc="enrolling", file=sys.stderr)
    done = enrol(gallery, analyzer, bar, lambda error: tqdm.write(f"skipped: {error}", file=sys.stderr),
                 args.max_pixels)
    holds = f"{args.gallery} holds {len(gallery.names())} people, {len(gallery)} embeddings"
    if not done.embeddings and not done.already:
        raise CommandError(f"no face found in any of the {len(images)} image(s); gallery unchanged")
    if done.embeddings:
        gallery.save(args.gallery)
        print(f"enrolled {done.embeddings} embedding(s) of {done.people} person(s), skipped "
              f"{done.skipped} image(s), {done.already} already in the gallery; {holds}")
    else:
        print(f"nothing new: {done.already} image(s) already in the gallery, skipped {done.skipped}; "
              f"gallery unchanged; {holds}")
    return 1 if done.skipped else 0


def import_folder(args: argparse.Namespace) -> int:
    return enrol_and_save(args, person_images(args.folder))


def enrol_images(args: argparse.Namespace) -> int:
    if not args.name.strip():
        raise CommandError("the person's name must not be empty")
    return enrol_and_save(args, [PersonImage(args.name, path) for path, _ in iter_image_files(args.images)])


def list_people(args: argparse.Namespace) -> int:
    gallery = open_gallery(args)
    people = gallery.people()
    width = max([len("name"), *(len(p.name) for p in people)])
    print(f"{'name':<{width}}  embeddings  watch")
    for p in people:
        print(f"{p.name:<{width}}  {p.embeddings:>10}  {'yes' if p.watch else 'no'}")
    print(f"{len(people)} people, {sum(p.embeddings for p in people)} embeddings")
    if args.thumbnails:
        written = write_thumbnails(gallery, args.thumbnails)
        print(f"{written} thumbnail(s) written to {args.thumbnails}")
    return 0


def write_thumbnails(gallery: GalleryIndex, folder: Path) -> int:
    """Each row's thumbnail as folder/<person>/<n>.png, n counting that person's rows from 1;
    owner-only, since they are faces."""
    rows = gallery.export()
    counts: dict[str, int] = {}
    written = 0
    for name, thumb in zip(rows.names, rows.thumbnails):
        counts[name] = counts.get(name, 0) + 1
        if thumb is None:
            continue
        # Names are free text: keep them from leaving `folder` or hiding as dot files.
        person = folder / (re.sub(r"[^\w.-]", "_", name).lstrip(".") or "_")
        person.mkdir(mode=0o700, parents=True, exist_ok=True)
        ok, png = cv2.imencode(".png", thumb[:, :, ::-1])
        fd = os.open(person / f"{counts[name]}.png", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(png.tobytes())
        written += 1
    return written


def remove(args: argparse.Namespace) -> int:
    gallery = open_gallery(args)
    removed = gallery.remove(known(gallery, args.name, args.gallery))
    gallery.save(args.gallery)
    print(f"removed {args.name} ({removed} embedding(s))")
    return 0


def set_watch(args: argparse.Namespace, on: bool) -> int:
    gallery = open_gallery(args)
    gallery.set_watch(known(gallery, args.name, args.gallery), on)
    gallery.save(args.gallery)
    print(f"{args.name} is {'on' if on else 'off'} the watchlist")
    return 0


def watch(args: argparse.Namespace) -> int:
    return set_watch(args, True)


def unwatch(args: argparse.Namespace) -> int:
    return set_watch(args, False)


def search(args: argparse.Namespace) -> int:
    analyzer = load_analyzer(args)
    gallery = open_gallery(args, gallery_config(analyzer, threshold=args.threshold))
    failed = 0
    for path, _ in iter_image_files(args.images):
        try:
            image = load_image(path, args.max_pixels)
        except MediaError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        results = analyzer.analyze(image)
        if not len(results.faces.boxes):
            print(f"{path}: no face found")
        matches = gallery.closest(results.identity.vectors)
        for i, (box, match) in enumerate(zip(results.faces.boxes, matches)):
            where = f"{path} face {i + 1} [{','.join(str(round(float(v))) for v in box)}]"
            if match is None:
                print(f"{where}: unknown (the gallery is empty)")
            elif match.distance <= args.threshold:
                print(f"{where}: {match.name} {match.distance:.3f}")
            else:
                print(f"{where}: unknown (nearest {match.name} {match.distance:.3f})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, GalleryError, EnrolmentError, ModelFileError, ModelEntryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
