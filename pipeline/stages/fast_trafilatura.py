"""trafilatura's ``extract``, same output, less work.

Where trafilatura 2.3.1 spends its time with FineWeb's settings, and what this module does instead:

- Pruning rules (about half of the time): trafilatura selects boilerplate with XPath expressions that call
  ``re:test`` (EXSLT regular expressions), which lxml runs as a Python callback per element and per test,
  building a node-set list each time, and each rule list walks the whole tree again. Here each pruning step
  walks the tree once in Python (tags preselected in C) and reads an element's rule flags from a memo keyed
  by its tag and the attributes the rules read, computed once per distinct key with the same regular
  expressions (``_rules``). Removal order does not change the result: every rule reads only the element's
  own attributes (``RAW_TREE_PRUNE_XPATH`` also ``.//h1`` below it, read before any removal, as trafilatura
  does), and removing a set of elements while keeping their tails gives the same tree in any order; so the
  matches of a rule list evaluated after earlier removals are the first evaluation's matches minus the
  removed subtrees, whose own removal is then invisible. This also lets the first pass over the raw tree
  collect the matches the comparison step prunes from the raw tree later.
- Element classes: lxml.html asks a Python callback for the class of every element object it creates; our
  parser (trafilatura's settings) chooses lxml.html's classes in C.
- Copies: with ``precision`` the raw tree is not read after the readability comparison, which therefore
  works on it instead of on a deep copy.
- Readability (``_Readability``): the unlikely-candidate pass visits only elements with a class or id, the
  scoring pass measures each link's text once instead of once per enclosing candidate, and its summary is
  parsed back with the parser above.

The rest of trafilatura's cascade is mirrored function by function (same calls, same order, so a shared
deduplication ``LRUCache`` sees the same segments in the same order) and calls trafilatura's own helpers.
The mirror is pinned to ``PINNED_VERSION``: with any other trafilatura version, or with options outside the
mirrored and tested subset (see :func:`_supported`), :func:`extract` is plain ``trafilatura.extract``.
``tests/test_fast_trafilatura.py`` proves equal output on every real page we have.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from copy import copy, deepcopy

import trafilatura
from lxml import etree
from lxml.etree import Element, XPath, _Element, strip_elements, strip_tags, tostring
from lxml.html import HtmlComment, HtmlElement, HtmlEntity, HtmlProcessingInstruction, fromstring

log = logging.getLogger(__name__)

PINNED_VERSION = "2.3.1"
"""The trafilatura version whose logic this module mirrors, rule for rule."""

ENABLED = trafilatura.__version__ == PINNED_VERSION

if ENABLED:
    from trafilatura import xpaths as _x
    from trafilatura.baseline import baseline, html2txt
    from trafilatura.core import (
        ESCALATION_ACCEPT_RATIO,
        ESCALATION_JUSTEXT_RATIO,
        ESCALATION_MAX_LENGTH,
        ESCALATION_PAGE_SHARE,
        _forum_thread_page,
        determine_returnstring,
    )
    from trafilatura.deduplication import duplicate_test
    from trafilatura.external import (
        JUSTEXT_OVERRIDE_RATIO,
        SANITIZED_XPATH,
        _prefer_readability,
        justext_rescue,
        sanitize_tree,
    )
    from trafilatura.htmlprocessing import convert_tags, delete_by_link_density, link_density_test_tables, tree_cleaning
    from trafilatura.main_extractor import (
        NOT_AT_THE_END,
        REBUILT_BLOCKS,
        _elem_text,
        handle_textelem,
        process_node,
    )
    from trafilatura.metadata import Document
    from trafilatura.readability_lxml import FRAME_TAGS, REGEXES, text_length
    from trafilatura.readability_lxml import Document as ReadabilityDocument
    from trafilatura.settings import DEDUPE_SCAN_CAP, INLINE_FORMATTABLE, MIN_DUPLICATE_LENGTH, TAG_CATALOG, Extractor
    from trafilatura.utils import (
        SPACING_PROTECTED,
        decode_file,
        is_dubious_html,
        repair_faulty_html,
        text_chars_test,
        trim,
    )
    from trafilatura.xml import delete_element
else:  # pragma: no cover - depends on the installed version
    log.warning(
        "trafilatura %s installed, fast_trafilatura mirrors %s: using plain trafilatura.extract",
        trafilatura.__version__,
        PINNED_VERSION,
    )


def extract(html: str, options: Extractor) -> str | None:
    """What ``trafilatura.extract(html, options=options)`` returns, with less work when the options allow."""
    if not ENABLED or not isinstance(html, str | bytes) or not _supported(options):
        return trafilatura.extract(html, options=options)
    document = _bare_extraction(html, options)
    if document is None:
        return None
    return determine_returnstring(document, options)


def _supported(options: Extractor) -> bool:
    """The mirrored and tested option subset: plain-text output without comments, metadata, language filter,
    formatting, links or images; ``fast``, ``precision``/``recall``, ``tables`` and ``dedup`` are free."""
    return (
        options.format == "txt"
        and not options.with_metadata
        and not options.comments
        and not options.lang
        and not options.formatting
        and not options.links
        and not options.images
    )


# ---------------------------------------------------------------------------------------------------------------
# The pruning rules, as Python predicates over an element's attributes (trafilatura.xpaths, version-pinned).
#
# XPath semantics kept: a missing attribute reads as ""; ``@id|@class`` reads the attribute that comes first
# in the element's source order; ``re:test`` is ``re.search`` with the pattern compiled by lxml's EXSLT
# module (``re.UNICODE``, plus ``re.IGNORECASE`` for the ``'i'`` flag).


def _first(keys: list[str], a: str | None, b: str | None, name_a: str, name_b: str) -> str:
    """XPath's string value of ``@name_a|@name_b``: the attribute earlier in source order, or ""."""
    if a is None:
        return b or ""
    if b is None:
        return a
    return a if keys.index(name_a) < keys.index(name_b) else b


def _re(pattern: str, flags: int = 0) -> Callable[[str], re.Match[str] | None]:
    return re.compile(pattern, re.UNICODE | flags).search


_OVERALL_TAGS = frozenset(("div", "item", "list", "p", "section", "span"))
_COMMENT_TAGS = frozenset(("div", "list", "section", "details"))
_COMMENT_LIST_TAGS = _COMMENT_TAGS | {"ol", "ul"}
_RAW_TAGS = frozenset(("div", "section", "aside"))
_BODY_TAGS = frozenset(("article", "div", "main", "section"))
_CM = str.maketrans("CM", "cm")
_CP = str.maketrans("CP", "cp")
_N = str.maketrans("N", "n")
_T = str.maketrans("T", "t")

if ENABLED:
    _alt = _x._alt
    # OVERALL_DISCARD_XPATH[0]
    _OD_COOKIE = _re(_alt(_x._CONSENT_ID_CLASS_TOKENS))
    _OD_ID = _re(_alt(_x._OVERALL_DISCARD_BOTH_TOKENS + _x._OVERALL_DISCARD_ID_TOKENS))
    _OD_CLASS = _re(_alt(_x._OVERALL_DISCARD_BOTH_TOKENS + _x._OVERALL_DISCARD_CLASS_TOKENS))
    # OVERALL_DISCARD_XPATH[1]
    _OD1_HIDDEN = _re("hidden")
    _OD1_ID = _re("reader-comments|akismet")
    _OD1_CLASS = _re(
        "^hide-|comments-title|nocomments|-reply-|message|akismet|suggest-links|-hide-|hide-print| hidden| hide|noprint"
        "|notloaded"
    )
    # REMOVE_COMMENTS(_AND_LISTS)_XPATH
    _RC_ID = _re(f"^(?:{_x._COMMENTS_ID}|disqus_thread|dsq-comments)")
    _RC_CLASS = _re(_x._COMMENTS_CLASS)
    _RCL_ID = _re(f"^(?:{_x._COMMENTS_ID})")
    # RAW_TREE_PRUNE_XPATH[0]
    _RAW_ANY = _re("mvp-post-add-(?:box|wrap)|infinite-?scroll")
    _RAW_MVP = _re("mvp-post-add-(?:box|wrap)")
    # PRECISION_DISCARD_XPATH[1]
    _PD_BOTTOM = _re(r"(^|\s)bottom|bottom(\s|$)")
    _PD_LINK = _re(r"(^|\s)link(\s|$)")
    # BODY_XPATH[0], [2], [3]
    _B0_ID = _re(_alt(_x._ARTICLE_CONTENT_ID_TOKENS))
    _B0_CLASS = _re(_alt(_x._ARTICLE_CONTENT_CLASS_TOKENS))
    _B2_ID = _re(_alt(_x._STORY_ID_TOKENS))
    _B2_FULLTEXT = _re("fulltext", re.IGNORECASE)
    _B2_CLASS = _re(_alt(_x._STORY_CLASS_TOKENS))
    _B3_ID = _re(_alt(_x._MAIN_CONTENT_ID_TOKENS))
    _B3_CLASS = _re(_alt(_x._MAIN_CONTENT_CLASS_TOKENS))
    _BODY1 = _x.BODY_XPATH[1]  # (.//article)[1]: no regex, kept as is
    _BODY4 = _x.BODY_XPATH[4]  # starts-with tests and (.//main)[1]: no regex, kept as is

# The elements each rule list can match (``.//*`` and its tag tests), tags selected in C.
_RAW_CANDIDATE_TAGS = ("div", "section", "aside", "list", "details", "ol", "ul")
_COMMENT_CANDIDATE_TAGS = ("div", "list", "section", "details")
_BODY_CANDIDATE_TAGS = ("article", "div", "main", "section")


OV0, OV1, CAPTION, TEASER, PRECISION, COMMENTS, COMMENT_LISTS, RAW, RAW_ANY_H1, BODY0, BODY2, BODY3 = (
    1 << i for i in range(12)
)
"""Which rules an element matches, from its tag and attributes (``RAW_ANY_H1``: ``RAW_TREE_PRUNE_XPATH[0]`` if the
element has no ``h1`` below it)."""


def _rules(tag: str, items: tuple[tuple[str, str], ...]) -> int:
    """The rule flags of an element with this tag and these attributes (in source order)."""
    keys = [k for k, _ in items]
    attrs = dict(reversed(items))  # the first of repeated names, as lxml's get()
    id_, cls, style = attrs.get("id"), attrs.get("class"), attrs.get("style")
    id_s, cls_s, style_s = id_ or "", cls or "", style or ""
    id_class = _first(keys, id_, cls, "id", "class")
    flags = 0
    listed = tag in _OVERALL_TAGS
    if listed and (
        "data-lp-replacement-content" in attrs
        or "nav" in (attrs.get("role") or "").translate(_N)
        or "MostPopularStories" in (attrs.get("data-component") or "")
        or _OD_COOKIE(id_class)
        or _OD_ID(id_s)
        or _OD_CLASS(cls_s)
    ):
        flags |= OV0
    if (
        cls == "comments-title"
        or id_class.startswith("reply-")
        or _OD1_HIDDEN(_first(keys, id_, style, "id", "style"))
        or "display:none" in style_s
        or "display: none" in style_s
        or _OD1_ID(id_s)
        or _OD1_CLASS(cls_s)
        or attrs.get("aria-hidden") == "true"
    ):
        flags |= OV1
    if listed and ("caption" in id_s or "caption" in cls_s):
        flags |= CAPTION
    if listed and ("teaser" in id_s.translate(_T) or "teaser" in cls_s.translate(_T)):
        flags |= TEASER
    if tag == "header" or (listed and (_PD_BOTTOM(id_class) or _PD_LINK(id_class) or "border" in style_s)):
        flags |= PRECISION
    if tag in _COMMENT_LIST_TAGS and (_RC_ID(id_s) or _RC_CLASS(cls_s)):
        if tag in _COMMENT_TAGS:
            flags |= COMMENTS
        if tag not in ("ol", "ul") or _RCL_ID(id_s) or _RC_CLASS(cls_s):
            flags |= COMMENT_LISTS
    if tag in _RAW_TAGS:
        if "elementor-share-buttons" in cls_s or (
            (_RAW_ANY(id_s) or _RAW_ANY(cls_s)) and (_RAW_MVP(id_s) or _RAW_MVP(cls_s))
        ):
            flags |= RAW
        elif _RAW_ANY(id_s) or _RAW_ANY(cls_s):
            flags |= RAW_ANY_H1
    if tag in _BODY_TAGS:
        if (
            cls in ("post", "entry")
            or attrs.get("itemprop") == "articleBody"
            or id_ == "articleContent"
            or _B0_ID(id_s)
            or _B0_CLASS(cls_s)
        ):
            flags |= BODY0
        if (
            attrs.get("role") == "article"
            or id_ in ("article", "story")
            or cls in ("postarea", "art-postcontent", "text", "cell", "story")
            or _B2_ID(id_s)
            or _B2_FULLTEXT(cls_s)
            or _B2_CLASS(cls_s)
        ):
            flags |= BODY2
        if (
            id_ == "content"
            or cls == "content"
            or _B3_ID(id_s)
            or _B3_CLASS(cls_s)
            or "main-content" in id_s.translate(_CM)
            or "main-content" in cls_s.translate(_CM)
            or "page-content" in cls_s.translate(_CP)
        ):
            flags |= BODY3
    return flags


_RELEVANT = frozenset(
    ("id", "class", "style", "role", "data-component", "data-lp-replacement-content", "aria-hidden", "itemprop")
)
"""The attributes the rules read; the others (href, src, data-*) do not change an element's flags."""

_MEMO: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
_MEMO_SIZE = 100_000
"""Pages repeat the same tags and attributes over and over: each combination is judged once."""


def _flags(elem: _Element) -> int:
    items = elem.items()
    key = (elem.tag, tuple([kv for kv in items if kv[0] in _RELEVANT]) if items else ())
    flags = _MEMO.get(key)
    if flags is None:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.clear()
        flags = _MEMO[key] = _rules(*key)
    return flags


def _remove(elements: list[_Element]) -> None:
    for elem in elements:
        delete_element(elem)  # the tail text is preserved


def prune_raw_tree(tree: HtmlElement, with_comments: bool, overall: list[_Element] | None = None) -> HtmlElement:
    """``RAW_TREE_PRUNE_XPATH`` then (``with_comments``) ``REMOVE_COMMENTS_AND_LISTS_XPATH``, in one pass.

    With ``overall``, the same pass also collects the elements ``OVERALL_DISCARD_XPATH`` matches, for a later
    :func:`prune_overall` of this very tree (its attributes do not change in between, and the matches inside
    subtrees removed meanwhile are removed from detached subtrees, which changes nothing).
    """
    wanted = RAW | (COMMENT_LISTS if with_comments else 0)
    matches = []
    for elem in tree.iterdescendants(_RAW_CANDIDATE_TAGS if overall is None else Element):
        flags = _flags(elem)
        if flags & wanted or (flags & RAW_ANY_H1 and next(elem.iterdescendants("h1"), None) is None):
            matches.append(elem)
        if overall is not None and flags & (OV0 | OV1):
            overall.append(elem)
    _remove(matches)
    return tree


def prune_comments(tree: HtmlElement) -> HtmlElement:
    """``prune_unwanted_nodes(tree, REMOVE_COMMENTS_XPATH)``."""
    _remove([elem for elem in tree.iterdescendants(_COMMENT_CANDIDATE_TAGS) if _flags(elem) & COMMENTS])
    return tree


def prune_overall(tree: HtmlElement, matches: list[_Element] | None = None) -> HtmlElement:
    """``prune_unwanted_nodes(tree, OVERALL_DISCARD_XPATH)`` (no backup); ``matches`` if already collected."""
    if matches is None:
        matches = [elem for elem in tree.iterdescendants(Element) if _flags(elem) & (OV0 | OV1)]
    _remove(matches)
    return tree


def _prune_sections(tree: HtmlElement, images: bool, teasers: bool, precision: bool) -> HtmlElement:
    """The rule-based pruning of ``prune_unwanted_sections``: OVERALL_DISCARD_XPATH with its over-pruning guard,
    then DISCARD_IMAGE_ELEMENTS (``images``), TEASER_DISCARD_XPATH (``teasers``), PRECISION_DISCARD_XPATH."""
    later_rules = (CAPTION if images else 0) | (TEASER if teasers else 0) | (PRECISION if precision else 0)
    first: list[_Element] = []
    second: list[_Element] = []
    later: list[_Element] = []
    for elem in tree.iterdescendants(Element):
        flags = _flags(elem)
        if flags & OV0:
            first.append(elem)
        if flags & OV1:
            second.append(elem)
        if flags & later_rules:
            later.append(elem)
    if first or second:
        # prune_unwanted_nodes(..., with_backup=True), matches in the same order
        matches = dict.fromkeys(first + second)
        outer = [elem for elem in matches if not any(a in matches for a in elem.iterancestors())]
        old_len = len(tree.text_content())
        if old_len - sum(len(elem.text_content()) for elem in outer) > old_len / 7:
            _remove(outer)
    _remove(later)
    return tree


def _first_body(tree: HtmlElement, rule: int) -> _Element | None:
    """The first element in document order that matches the BODY_XPATH ``rule``."""
    return next((elem for elem in tree.iterdescendants(_BODY_CANDIDATE_TAGS) if _flags(elem) & rule), None)


def _body_candidates(tree: HtmlElement) -> list[Callable[[], _Element | None]]:
    """BODY_XPATH: each expression's first match, in trafilatura's order, found when asked for.

    ``.//*[...][1]`` is the first match among each node's children; the first of those in document order is
    the first match overall, which is all ``_extract`` takes.
    """

    def first_of(xpath: XPath) -> Callable[[], _Element | None]:
        return lambda: next((s for s in xpath(tree) if s is not None), None)

    return [
        lambda: _first_body(tree, BODY0),
        first_of(_BODY1),
        lambda: _first_body(tree, BODY2),
        lambda: _first_body(tree, BODY3),
        first_of(_BODY4),
    ]


# ---------------------------------------------------------------------------------------------------------------
# trafilatura's cascade (core.py, main_extractor.py, external.py of the pinned version), comments off.


def _bare_extraction(html: str, options: Extractor) -> Document | None:
    """``bare_extraction`` for the supported options (no metadata, no language, no user prune XPath)."""
    try:
        tree = _load_html(html, options.max_file_size)
        if tree is None:
            log.debug("empty HTML tree")
            raise ValueError
        document = Document()
        postbody, temp_text, commentsbody, temp_comments = _sequence(tree, options, options.url)
        len_text, len_comments = len(temp_text), len(temp_comments)
        if options.max_tree_size:
            if len(postbody) > options.max_tree_size:
                strip_tags(postbody, "hi")
            if len(postbody) > options.max_tree_size:
                raise ValueError
        if len_text < options.min_output_size and len_comments < options.min_output_comm_size:
            raise ValueError
        if options.dedup and duplicate_test(postbody, options) is True:
            raise ValueError
    except (TypeError, ValueError):
        return None
    document.raw_text, document.commentsbody = temp_text, commentsbody
    document.body = postbody
    return document


_PARSER = etree.HTMLParser(
    collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True, remove_pis=True
)
"""trafilatura's ``HTML_PARSER`` with lxml.html's element classes chosen in C, not by a Python callback per element.

lxml.html asks a Python ``lookup`` for the class of every element object it creates (about 10% of the
time here); the only classes that lookup gives and this one does not are those of form, input, select,
textarea and label elements, whose extra properties (form fields and values) trafilatura never reads.
"""
_PARSER.set_element_class_lookup(
    etree.ElementDefaultClassLookup(
        element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity
    )
)


def _fromstring_bytes(htmlobject: str) -> HtmlElement | None:
    try:
        return fromstring(htmlobject.encode("utf8", "surrogatepass"), parser=_PARSER)
    except Exception as err:
        log.debug("lxml parser bytestring %s", err)
    return None


def _load_html(htmlobject: str | bytes, max_size: int | None) -> HtmlElement | None:
    """``utils.load_html`` for a string or bytes, parsed with :data:`_PARSER`."""
    if not isinstance(htmlobject, bytes | str):
        raise TypeError("incompatible input type", type(htmlobject))
    tree = None
    htmlobject = decode_file(htmlobject, max_size)
    beginning = htmlobject[:50].lower()
    check_flag = is_dubious_html(beginning)
    htmlobject = repair_faulty_html(htmlobject, beginning)
    fallback_parse = False
    try:
        tree = fromstring(htmlobject, parser=_PARSER)
    except ValueError:
        tree = _fromstring_bytes(htmlobject)
        fallback_parse = True
    except Exception as err:  # pragma: no cover - as trafilatura
        log.debug("lxml parsing failed: %s", err)
    if (tree is None or len(tree) < 1) and not fallback_parse:
        tree = _fromstring_bytes(htmlobject)
    if tree is not None and check_flag is True and len(tree) < 2:
        tree = None
    return tree


def _prepare_tree(tree: HtmlElement, options: Extractor, url: str | None) -> tuple[HtmlElement, HtmlElement]:
    cleaned = tree_cleaning(copy(tree), options)
    backup = copy(cleaned)
    cleaned = convert_tags(cleaned, options, url)
    return cleaned, backup


def _extract_and_compare(
    cleaned_tree: HtmlElement,
    cleaned_tree_backup: HtmlElement,
    tree: HtmlElement,
    options: Extractor,
    last_use: bool = False,
    overall: list[_Element] | None = None,
) -> tuple[_Element, str]:
    """``last_use``: the caller never reads ``tree`` again, so readability may take it instead of a copy
    (when it is a document root: a copy has no parent, and readability scores parents); ``overall``: the
    ``OVERALL_DISCARD_XPATH`` matches in ``tree``, collected by :func:`prune_raw_tree`."""
    postbody, temp_text = _extract_content(cleaned_tree, options)
    if not options.fast:
        in_place = last_use and tree.getparent() is None and not tree.tail
        raw_tree = tree if in_place else copy(tree)
        postbody, temp_text = _compare_extraction(
            cleaned_tree_backup, raw_tree, postbody, temp_text, options, overall if in_place else None
        )
    return postbody, temp_text


def _sequence(tree: HtmlElement, options: Extractor, url: str | None) -> tuple[_Element, str, _Element, str]:
    """``trafilatura_sequence`` with comments off (so no forum-post salvage)."""
    is_forum = _forum_thread_page(tree)
    # with precision, the raw tree is not read after the comparison (no baseline rescue, no recall escalation):
    # the comparison prunes it in place, with the matches this first pass collects
    last_use = options.focus == "precision"
    overall: list[_Element] | None = [] if last_use and not options.fast else None
    tree = prune_raw_tree(tree, options.focus == "precision" or not is_forum, overall)
    cleaned_tree, cleaned_tree_backup = _prepare_tree(tree, options, url)
    commentsbody, temp_comments = Element("body"), ""
    if options.focus == "precision" and not is_forum:
        cleaned_tree = prune_comments(cleaned_tree)

    postbody, temp_text = _extract_and_compare(cleaned_tree, cleaned_tree_backup, tree, options, last_use, overall)

    if len(temp_text) < options.min_extracted_size and options.focus != "precision":
        b_body, b_text, b_len = baseline(tree)
        if b_len > len(temp_text):
            postbody, temp_text = b_body, b_text

    if (
        options.focus == "balanced"
        and 0 < len(temp_text) < ESCALATION_MAX_LENGTH
        and len(temp_text) < ESCALATION_PAGE_SHARE * len(html2txt(tree))
    ):
        r_options = copy(options)
        r_options.focus = "recall"
        esc_tree = tree  # comments off: already pruned
        r_text = ""
        try:
            r_body, r_text = _extract_and_compare(*_prepare_tree(esc_tree, r_options, url), esc_tree, r_options)
        except Exception as err:  # pragma: no cover - as trafilatura
            log.debug("recall retry failed: %s", err)
        j_text = ""
        if not options.fast:
            try:
                j_body, j_text = justext_rescue(copy(esc_tree), options)
            except Exception as err:  # pragma: no cover - as trafilatura
                log.debug("justext candidate failed: %s", err)
        len_text, r_len, j_len = len(temp_text), len(r_text), len(j_text)
        if j_len > r_len and j_len > ESCALATION_JUSTEXT_RATIO * len_text:
            postbody, temp_text = j_body, j_text
        elif r_len >= options.min_extracted_size and r_len > ESCALATION_ACCEPT_RATIO * len_text:
            postbody, temp_text = r_body, r_text
    return postbody, temp_text, commentsbody, temp_comments


def _compare_extraction(
    cleaned_tree: HtmlElement,
    raw_tree: HtmlElement,
    body: _Element,
    text: str,
    options: Extractor,
    overall: list[_Element] | None = None,
) -> tuple[_Element, str]:
    """``external.compare_extraction``; ``overall``: the ``OVERALL_DISCARD_XPATH`` matches in ``raw_tree``."""
    len_text = len(text)
    if options.focus == "recall" and len_text > options.min_extracted_size * 10:
        return body, text
    if options.focus == "precision":
        raw_tree = prune_overall(raw_tree, overall)
    temppost_algo = _try_readability(raw_tree)
    algo_text = trim(tostring(temppost_algo, method="text", encoding="utf-8").decode("utf-8"))
    len_algo = len(algo_text)
    use_readability = _prefer_readability(body, temppost_algo, algo_text, len_text, len_algo, options)
    if use_readability:
        body, text, len_text = temppost_algo, algo_text, len_algo
    unclean = bool(body.xpath(SANITIZED_XPATH))
    if unclean or len_text < options.min_extracted_size:
        body2, text2 = justext_rescue(cleaned_tree, options)
        len_text2 = len(text2)
        if unclean:
            accept = len_text <= JUSTEXT_OVERRIDE_RATIO * len_text2 and (
                len_text2 > len_text or not options.images or body.find(".//graphic") is None
            )
        else:
            accept = len_text < len_text2
        if text2 and accept:
            body, text, len_text = body2, text2, len_text2
            use_readability = False
    if use_readability:
        body, text = sanitize_tree(body, options)
    return body, text


def _prune_unwanted_sections(
    tree: HtmlElement, potential_tags: set[str], options: Extractor, keep_teasers: bool = False
) -> HtmlElement:
    """``main_extractor.prune_unwanted_sections``, the XPath rules in one pass."""
    favor_precision = options.focus == "precision"
    tree = _prune_sections(
        tree,
        images="graphic" not in potential_tags,
        teasers=options.focus != "recall" and not keep_teasers,
        precision=options.focus != "recall" and favor_precision,
    )
    for _ in range(2):
        tree = delete_by_link_density(tree, "div", backtracking=True, favor_precision=favor_precision)
        tree = delete_by_link_density(tree, "list", backtracking=False, favor_precision=favor_precision)
        tree = delete_by_link_density(tree, "p", backtracking=False, favor_precision=favor_precision)
    if "table" in potential_tags or favor_precision:
        boilerplate_tables = [elem for elem in tree.iter("table") if link_density_test_tables(elem) is True]
        for elem in boilerplate_tables:
            delete_element(elem, keep_tail=False)
    if favor_precision:
        while len(tree) > 0 and (tree[-1].tag == "head"):
            delete_element(tree[-1], keep_tail=False)
        tree = delete_by_link_density(tree, "head", backtracking=False, favor_precision=True)
        tree = delete_by_link_density(tree, "quote", backtracking=False, favor_precision=True)
    strip_tags(tree, "span", *(() if "ref" in potential_tags else ("ref",)))
    return tree


def _extract(tree: HtmlElement, options: Extractor) -> tuple[_Element, str, set[str]]:
    """``main_extractor._extract``."""
    potential_tags = set(TAG_CATALOG)
    if options.tables is True:
        potential_tags.update(["table", "td", "th", "tr"])
    if options.images is True:
        potential_tags.add("graphic")
    if options.links is True:
        potential_tags.add("ref")
    result_body = Element("body")
    for find_subtree in _body_candidates(tree):
        subtree = find_subtree()
        if subtree is None:
            continue
        subtree = _prune_unwanted_sections(subtree, potential_tags, options)
        if len(subtree) == 0:
            continue
        ptest = subtree.xpath("//p//text()")
        factor = 1 if options.focus == "precision" else 3
        if not ptest or len("".join(ptest)) < options.min_extracted_size * factor:
            potential_tags.add("div")
        subelems = subtree.xpath(".//*")
        tags = {e.tag for e in subelems}
        if tags == {"lb"} or (subtree.tag == "div" and "div" in potential_tags and tags <= INLINE_FORMATTABLE | {"lb"}):
            subelems = [subtree]
        lead, start = None, len(result_body)
        if subelems != [subtree] and text_chars_test(subtree.text):
            lead = Element("p")
            lead.text = subtree.text
            lead = process_node(lead, options)
        for elem in subelems:
            if elem.getroottree().getroot() is result_body:
                continue
            tag, tail = elem.tag, elem.tail
            processed_elem = handle_textelem(elem, potential_tags, options)
            if processed_elem is not None:
                result_body.append(processed_elem)
                if elem.getroottree().getroot() is not result_body:
                    elem.tag = "done"
            if (
                tag in REBUILT_BLOCKS
                and text_chars_test(tail)
                and (processed_elem is None or processed_elem.tail is None)
            ):
                tail_elem = Element("p")
                tail_elem.text = tail
                if process_node(tail_elem, options) is not None:
                    result_body.append(tail_elem)
        while len(result_body) > 0 and (result_body[-1].tag in NOT_AT_THE_END):
            delete_element(result_body[-1], keep_tail=False)
        if sum(e.tag != "graphic" for e in result_body) > 1:
            if lead is not None:
                result_body.insert(start, lead)
            break
    temp_text = " ".join(result_body.itertext()).strip()
    return result_body, temp_text, potential_tags


def _recover_wild_text(
    tree: HtmlElement,
    result_body: _Element,
    options: Extractor,
    potential_tags: set[str] | None = None,
    consumed: set[_Element] | None = None,
) -> _Element:
    """``main_extractor.recover_wild_text``."""
    potential_tags = set(TAG_CATALOG if potential_tags is None else potential_tags)
    search_expr = _RECOVER_XPATH
    if options.focus == "recall":
        potential_tags.update(["div", "lb"])
        search_expr = _RECOVER_XPATH_RECALL
    search_tree = _prune_unwanted_sections(tree, potential_tags, options, keep_teasers=options.fast)
    subelems = search_expr(search_tree)
    elem_texts = [_elem_text(el) for el in result_body]
    existing = "\n".join(filter(None, elem_texts))
    existing_elems = set(elem_texts)
    handled: set[_Element] = set()
    for subelem in subelems:
        if (consumed and subelem in consumed) or any(a in handled for a in subelem.iterancestors()):
            continue
        processed = handle_textelem(subelem, potential_tags, options)
        if processed is None:
            continue
        if processed is subelem:
            handled.add(subelem)
        text = _elem_text(processed)
        images = {img.get("src") for img in processed.iter("graphic")}
        if not text and images and images <= {g.get("src") for g in result_body.iter("graphic")}:
            continue
        under_cap = len(existing) <= DEDUPE_SCAN_CAP
        fragment = trim(text + (processed.tail or "")) if text_chars_test(processed.tail) else ""
        if text and (
            text in existing_elems
            or (
                under_cap
                and ((len(text) > MIN_DUPLICATE_LENGTH and text in existing) or (fragment and fragment in existing))
            )
        ):
            continue
        result_body.append(processed)
        if under_cap:
            existing += "\n" + (fragment or text)
        existing_elems.add(text)
    return result_body


_RECOVER_EXPR = ".//code|.//p|.//quote|.//table|.//div[contains(@class, 'w3-code')]"
_RECOVER_XPATH = XPath(_RECOVER_EXPR)
_RECOVER_XPATH_RECALL = XPath(_RECOVER_EXPR + "|.//div|.//lb|.//list")


def _extract_content(cleaned_tree: HtmlElement, options: Extractor) -> tuple[_Element, str]:
    """``main_extractor.extract_content``."""
    backup_tree = deepcopy(cleaned_tree)
    order = list(cleaned_tree.iter())
    result_body, temp_text, potential_tags = _extract(cleaned_tree, options)
    if len(result_body) == 0 or len(temp_text) < options.min_extracted_size:
        consumed: set[_Element] = {
            twin for elem, twin in zip(order, backup_tree.iter(), strict=True) if elem.tag == "done"
        }
        result_body = _recover_wild_text(backup_tree, result_body, options, potential_tags, consumed)
        temp_text = " ".join(result_body.itertext()).strip()
    previous = None
    for el in list(result_body):
        current = _elem_text(el)
        if current and current == previous and len(current) > MIN_DUPLICATE_LENGTH:
            delete_element(el, keep_tail=False)
        else:
            previous = current
    strip_elements(result_body, "done")
    strip_tags(result_body, "div")
    for linebreak in result_body.iter("lb"):
        if (
            linebreak.tail
            and not text_chars_test(linebreak.tail)
            and not any(anc.tag in SPACING_PROTECTED for anc in linebreak.iterancestors())
        ):
            linebreak.tail = None
    return result_body, temp_text


# ---------------------------------------------------------------------------------------------------------------
# readability (trafilatura/readability_lxml.py and external.try_readability of the pinned version)

_CLASS_OR_ID = XPath(".//*[@class or @id]")


class _Readability(ReadabilityDocument if ENABLED else object):  # type: ignore[misc]
    """trafilatura's readability ``Document`` with two steps doing the same with less work.

    - ``remove_unlikely_candidates`` visits only the elements with a class or id attribute (selected in C):
      the others join to an empty string, which the original skips.
    - ``score_paragraphs`` measures each link's text once: candidates nest (parent and grandparent of every
      paragraph), so the link-density pass measured the same links again and again. The tree does not change
      during scoring, and the memo holds the element proxies, so an element keeps its identity meanwhile.
    """

    __slots__ = ("_link_lengths",)

    def remove_unlikely_candidates(self) -> None:
        verdicts: dict[str, bool] = {}
        unlikely, maybe = REGEXES["unlikelyCandidatesRe"].search, REGEXES["okMaybeItsACandidateRe"].search
        for elem in _CLASS_OR_ID(self.doc):
            attrs = " ".join(filter(None, (elem.get("class"), elem.get("id"))))
            if len(attrs) < 2 or elem.tag in FRAME_TAGS:
                continue
            verdict = verdicts.get(attrs)
            if verdict is None:
                low = attrs.lower()
                verdict = verdicts[attrs] = bool(unlikely(low)) and not maybe(low)
            if verdict:
                elem.drop_tree()

    def score_paragraphs(self) -> dict:
        self._link_lengths: dict[_Element, int] | None = {}
        try:
            return super().score_paragraphs()
        finally:
            self._link_lengths = None

    def get_link_density(self, elem: HtmlElement) -> float:
        lengths = getattr(self, "_link_lengths", None)
        if lengths is None:
            return super().get_link_density(elem)
        total_length = text_length(elem) or 1
        link_length = 0
        for link in elem.iterdescendants("a"):
            length = lengths.get(link)
            if length is None:
                length = lengths[link] = text_length(link)
            link_length += length
        return link_length / total_length


def _try_readability(htmlinput: HtmlElement) -> HtmlElement:
    """``external.try_readability``; the summary is parsed with :data:`_PARSER` (element classes in C)."""
    try:
        summary = _fromstring_bytes(_Readability(htmlinput, min_text_length=25).summary())
        return summary if summary is not None else HtmlElement()
    except Exception as err:
        log.debug("readability_lxml failed: %s", err)
        return HtmlElement()
