"""``celltune summarize`` and ``celltune check``: what a data folder holds and what is wrong with it. ``celltune
cache``: the decoded images kept for training, and clearing them."""

from __future__ import annotations

import argparse
from pathlib import Path

from celltune.config import DataConfig
from celltune.config.flags import add_flags
from celltune.data.class_choice import CHOICE_FIELDS, ClassChoice, describe
from celltune.errors import ConfigError


def cmd_summarize(args: argparse.Namespace) -> int:
    from celltune.data.discovery import discover, summarize

    s = summarize(discover(args.data, seed=args.seed, groups=args.groups, groups_csv=args.groups_csv,
                           choice=ClassChoice.of(args)))
    splits = list(s["counts"])
    width = max(len(c) for c in s["classes"]) + 2
    print(f"{args.data}: {s['layout']}, {len(s['classes'])} classes")
    print(f"{'class':<{width}}" + "".join(f"{sp:>8}" for sp in splits))
    for c in s["classes"]:
        print(f"{c:<{width}}" + "".join(f"{s['counts'][sp][c]:>8d}" for sp in splits))
    print(f"{'total':<{width}}" + "".join(f"{s['totals'][sp]:>8d}" for sp in splits))
    sizes = s["image_sizes"]
    print(f"image sizes: most common {', '.join(sizes['most_common'])}; min {sizes['min'][0]}x{sizes['min'][1]}, "
          f"max {sizes['max'][0]}x{sizes['max'][1]}; modes {s['modes']}")
    if "groups" in s:
        print("groups: " + ", ".join(f"{split} {n}" for split, n in s["groups"].items()))
    if "classes_left_out" in s:
        print(f"classes left out: {describe(s['classes_left_out'])}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import time

    from celltune.audit.check import audit
    from celltune.audit.findings import format_findings
    from celltune.audit.groups import split_finding
    from celltune.audit.label_issues import label_issue_finding
    from celltune.data.discovery import discover, discover_pool
    from celltune.errors import GroupSplitError
    from celltune.progress import bar
    from celltune.reports.run_files import write_json

    where = {"label_names": args.label_names, "groups": args.groups, "groups_csv": args.groups_csv,
             "choice": ClassChoice.of(args)}
    split_problem = None
    try:
        found = discover(args.data, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                         seed=args.seed, **where)
    except GroupSplitError as err:  # split arithmetic never stops a check: every image in one pool, reported
        found, split_problem = discover_pool(args.data, **where), str(err)
    start = time.perf_counter()
    with bar(len(found.samples), "reading") as reading:
        result = audit(found, args.data, mask_dir=args.mask_dir, fractions=(args.val_fraction, args.test_fraction),
                       workers=args.workers, progress=reading.update)
    if split_problem is not None:
        result.findings.insert(0, split_finding(split_problem))
    if args.label_issues and (issue := label_issue_finding(Path(args.label_issues))) is not None:
        result.findings.append(issue)
    counts = {level: sum(f.level == level for f in result.findings) for level in ("error", "warning")}
    print(f"{args.data}: {found.layout}, {len(found.class_names)} classes, {len(result.facts)} files read in "
          f"{time.perf_counter() - start:.1f} s")
    if found.left_out_classes:
        print(f"classes left out: {describe(found.left_out_classes)}")
    print()
    print(format_findings(result.findings) or "no findings")
    print(f"\n{counts['error']} error(s), {counts['warning']} warning(s)")
    if args.json:
        write_json(Path(args.json), result.to_dict())
        print(f"every finding with all its files: {args.json}")
    return 1 if counts["error"] else 0


def cmd_cache(args: argparse.Namespace) -> int:
    import time

    from celltune.config.durations import parse_duration
    from celltune.data.cache_folder import amount, cache_entries, default_cache_dir, removable, remove

    directory = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    older = parse_duration(args.older_than, flag="--older-than").total_seconds() if args.older_than else None
    if (older is not None or args.all) and not args.clear:
        raise ConfigError("--older-than and --all choose what --clear removes: give --clear too")
    entries = cache_entries(directory)
    if args.clear:
        gone = removable(entries, older_than=older, everything=args.all)
        print(f"{directory}: removed {len(gone)} of {len(entries)} caches, {amount(remove(gone))} freed")
        return 0
    now = time.time()
    print(f"{'cache':<30}{'images':>8}  {'size':<10}{'MB':>9}  {'last used':<18}state")
    for e in entries:
        shape = "x".join(map(str, e.shape)) if e.shape else "-"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        state = "unfinished (killed)" if e.abandoned(now) else e.state
        print(f"{e.path.name:<30}{e.images if e.images is not None else '-':>8}  {shape:<10}{e.bytes / 1e6:>9.1f}  "
              f"{used:<18}{state}")
    stale = removable(entries, now=now)
    print(f"\n{len(entries)} caches, {amount(sum(e.bytes for e in entries))} in {directory}"
          + (f"; {len(stale)} ({amount(sum(e.bytes for e in stale))}) this version cannot use: "
             "`celltune cache --clear` removes them" if stale else "")
          + "\n--clear --older-than 30d also removes those unused for 30 days; --clear --all every cache "
          "(training builds what it needs again)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("summarize", help="counts per class and split, image sizes")
    p.add_argument("data")
    p.add_argument("--seed", type=int, default=0, help="seed of the split for a single class-folder tree")
    add_flags(p, DataConfig, only={"groups", "groups_csv", "max_image_pixels", *CHOICE_FIELDS}, with_defaults=True)
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("check", help="every problem of a dataset at once: unreadable files, duplicates and leaks, "
                       "classes, masks, groups, confounds (exit 1 on errors)")
    p.add_argument("data", help="the data folder, in any layout training reads")
    add_flags(p, DataConfig, only={"mask_dir", "groups", "groups_csv", "val_fraction", "test_fraction", "seed",
                                   "label_names", "max_image_pixels", *CHOICE_FIELDS}, with_defaults=True)
    p.add_argument("--json", metavar="FILE", help="write every finding with all its files here")
    p.add_argument("--label-issues", metavar="CV_DIR", help="also list the images whose label looks wrong, from "
                   "the label_issues.csv of a `celltune cv` on this data")
    p.add_argument("--workers", type=int, default=None, help="reading processes (default: the cores, at most 4)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("cache", help="list the decoded-image caches training keeps (sizes, last use); --clear removes "
                       "what this version cannot use, or what has not been used for a while")
    add_flags(p, DataConfig, only={"cache_dir"})
    p.add_argument("--clear", action="store_true", help="remove caches of an older format and killed builds")
    p.add_argument("--older-than", metavar="DURATION", help="with --clear: also the caches unused for this long (30d, "
                   "12h)")
    p.add_argument("--all", action="store_true", help="with --clear: every cache but builds still running")
    p.set_defaults(func=cmd_cache)
