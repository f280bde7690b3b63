"""The word index's analyser (issue 29): the Chinese words it drops, shared with search/translate.py."""
from __future__ import annotations

# Chinese: words a shop query says around what it wants (who wants it, wanting, buying, particles), shared with
# search/translate.py, which drops them too.
FUNCTION_WORDS = frozenset("""我 你 您 他 她 它 我们 你们 他们 咱们 自己 想 想要 要 需要 想买 要买 买 购买 买个 找 寻找 想找 请
请问 帮 帮我 给 给我 一下 看看 看 有 有没有 没有 是 的 地 得 之 了 着 过 吗 呢 吧 啊 呀 哦 嘛 和 与 跟 及 或 或者 还
也 都 就 很 非常 特别 最 太 比较 一个 一些 一点 有些 些 这 那 哪 这个 那个 这些 那些 哪个 什么 怎么 能 可以 应该
会 在 把 被 为 为了 对 用 带 带有 有着 款 种 样 个""".split())
NUMERALS = "零〇一二两三四五六七八九十百千万几半每这那哪0123456789"
MEASURES = frozenset("个辆双件条只台把张本瓶杯盒箱支套副顶块部架匹头枚袋份对片棵盏根间座款位斤")
