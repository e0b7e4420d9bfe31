"""The built-in bilingual synonym dictionary of EDA augmentation, and the user's own synonym files.

Each line of `ENGLISH` / `CHINESE` is one group of interchangeable words (comma separated); every
word of a group maps to the others. The vocabulary leans on customer support, shopping and
everyday requests, the text companies fine-tune on. Groups are kept to one sense each ("return"
the verb, not the noun) so a replacement keeps the meaning in most contexts.

Only single words become keys: English text is matched by whitespace tokens, Chinese text by the
longest dictionary word at each position (Chinese has no spaces), and a one-character Chinese key
would fire inside unrelated words, so one-character Chinese words and multi-word phrases are used
only as replacements.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from tailor.errors import TailorError

ENGLISH = """
buy, purchase, order
purchased, bought, ordered
return, send back
refund, reimbursement, repayment
exchange, swap, replace
cancel, call off, revoke
deliver, ship, send
delivery, shipment, shipping
package, parcel
arrive, come, turn up
arrived, came, showed up
receive, get, obtain
received, got
track, follow, trace
help, assist, aid
question, query, inquiry
answer, reply, response
ask, inquire, enquire
tell, inform, notify
explain, describe, clarify
show, display, present
problem, issue, trouble
broken, damaged, faulty, defective
wrong, incorrect, mistaken
fix, repair, mend
error, mistake, fault
quick, fast, rapid, speedy
quickly, rapidly, promptly
slow, sluggish, unhurried
big, large, huge
small, little, tiny
cheap, inexpensive, affordable, low-cost
expensive, costly, pricey
price, cost, charge
fee, charge, cost
discount, markdown, reduction
free, complimentary, no-cost
store, shop, outlet
customer, client, buyer, shopper
item, product, article
items, products, goods, articles
account, profile
password, passcode
email, e-mail
phone, telephone
call, ring, phone up
contact, reach, get in touch with
address, location
change, modify, alter, update
check, verify, confirm
find, locate, discover
look, search, seek
need, require, want
want, wish, would like
like, enjoy, love
start, begin, commence
stop, end, halt
finish, complete, conclude
close, shut
keep, retain, hold
use, utilize, employ
make, create, produce
give, provide, offer
send, dispatch, forward
pay, settle, cover
payment, remittance
bill, invoice
receipt, proof of purchase
policy, rule, guideline
rules, regulations, guidelines
allowed, permitted, possible
soon, shortly, presently
now, immediately, right away
usually, normally, typically, generally
often, frequently, regularly
sometimes, occasionally
always, constantly
never, not ever
maybe, perhaps, possibly
very, really, extremely, highly
good, great, fine, nice
bad, poor, awful
happy, glad, pleased
sad, unhappy, upset
angry, annoyed, upset
worried, concerned, anxious
easy, simple, straightforward
hard, difficult, tough
important, essential, crucial, key
correct, right, accurate
possible, feasible, doable
available, in stock, obtainable
unavailable, out of stock
enough, sufficient, adequate
new, brand-new, unused
clean, spotless
dirty, soiled
short, brief
late, delayed, overdue
early, ahead of time
wait, hold on
waiting, holding on
week, seven days
support, service, assistance
staff, employees, team
agent, representative, rep
manager, supervisor
message, note, text
information, info, details
details, particulars, specifics
instructions, directions, guidance
steps, procedure, process
option, choice, alternative
options, choices, alternatives
size, dimensions
color, colour, shade
fit, suit, match
choose, pick, select
decide, determine, settle on
try, attempt
learn, find out, discover
understand, grasp, comprehend
know, be aware of
think, believe, suppose
sure, certain, confident
please, kindly
thanks, thank you, cheers
hello, hi, hey, greetings
goodbye, bye, farewell
sorry, apologies
problematic, troublesome
laptop, notebook, notebook computer
phone, mobile, cellphone, smartphone
headphones, earphones, headset
bag, sack
jacket, coat
shoes, footwear
boots, footwear
bicycle, bike, cycle
car, vehicle, automobile
home, house, residence
city, town
country, nation
region, area, zone
near, close to, nearby
far, distant, remote
quiet, silent, calm
loud, noisy
warm, hot
cold, chilly, cool
travel, journey, trip
rent, hire, lease
borrow, take out
lend, loan
lost, missing, misplaced
stolen, taken
safe, secure, protected
risk, danger, hazard
warranty, guarantee
deal, promotion, special offer
sale, clearance, promotion
coupon, voucher
gift, present
cash, money
money, funds
delete, remove, erase
remove, take away, take off
add, include, attach
attach, append, include
send, submit, forward
reply, respond, answer
request, ask for, demand
complaint, grievance, objection
complain, object, protest
review, feedback, rating
recommend, suggest, advise
suggest, propose, recommend
prefer, favor, like better
differ, vary
similar, alike, comparable
different, distinct, other
same, identical, equal
whole, entire, complete
part, piece, portion
broken, cracked, smashed
working, functioning, operating
job, task, work
schedule, timetable, plan
appointment, booking, reservation
booked, reserved
confirm, verify, validate
confirmation, verification
login, sign in, log in
logout, sign out, log out
register, sign up, enroll
subscription, membership
subscribe, sign up
unsubscribe, opt out
website, site, web page
app, application
upload, transfer
install, set up
setting, option, preference
settings, preferences, options
reset, restore
update, upgrade, refresh
weekday, workday, business day
weekend, saturday and sunday
morning, forenoon
evening, night
quickest, fastest
cheapest, lowest-priced
best, finest, top
worst, poorest
""".strip()

CHINESE = """
购买, 买, 选购, 采购
订购, 下单, 预订
退货, 退回, 退换
退款, 退钱, 返款
换货, 更换, 调换
取消, 撤销, 作废
发货, 寄出, 发出
配送, 送货, 运送, 递送
快递, 包裹
到货, 送达, 抵达
收到, 接到, 拿到
查询, 查看, 查找
跟踪, 追踪
帮助, 帮忙, 协助, 援助
问题, 疑问
回答, 答复, 回复
询问, 咨询, 打听
告诉, 通知, 告知
解释, 说明, 阐明
显示, 展示
故障, 毛病, 问题
损坏, 破损, 坏了
错误, 差错, 失误
修理, 维修, 修复
快速, 迅速, 很快
马上, 立刻, 立即, 马上就
缓慢, 很慢
便宜, 实惠, 划算, 低价
昂贵, 贵, 高价
价格, 价钱, 售价
费用, 费, 花费
折扣, 优惠, 打折
免费, 不收费
商店, 店铺, 门店, 商铺
顾客, 客户, 消费者, 买家
商品, 产品, 货品, 物品
账户, 账号
密码, 口令
邮箱, 电子邮件, 邮件
电话, 手机号, 联系电话
联系, 联络
地址, 住址
修改, 更改, 变更
检查, 核对, 确认
找到, 找着
寻找, 查找, 搜索
需要, 要, 需
想要, 希望, 打算
喜欢, 喜爱, 爱
开始, 开启
停止, 终止, 停下
完成, 结束, 做完
打开, 开启
关闭, 关掉, 关上
保留, 保存, 留着
使用, 用, 利用
提供, 给予
支付, 付款, 付钱, 结账
发票, 票据
收据, 凭证
政策, 规定, 条款
允许, 准许, 许可
很快, 不久, 马上
现在, 目前, 当前
今天, 今日
通常, 一般, 平常, 往往
经常, 常常, 时常
有时, 偶尔, 有时候
总是, 一直, 始终
也许, 可能, 或许
很多, 许多, 大量
非常, 很, 十分, 特别
满意, 高兴, 开心
不满, 不满意
生气, 恼火
担心, 着急, 忧虑
简单, 容易, 方便
困难, 难, 麻烦
重要, 关键, 要紧
正确, 对, 准确
可用, 有货, 现货
缺货, 没货, 断货
足够, 充足
崭新, 全新
旧的, 二手
干净, 整洁
时间, 时候, 时长
营业时间, 开门时间
工作日, 上班日
周末, 星期六和星期日
客服, 客户服务, 售后
员工, 工作人员, 店员
经理, 主管, 负责人
信息, 资料, 消息
详情, 细节, 具体信息
说明书, 使用说明
步骤, 流程, 过程
选择, 挑选, 选
选项, 选择
尺寸, 尺码, 大小
颜色, 色彩
合适, 适合, 合身
决定, 确定
尝试, 试试, 试一下
了解, 知道, 明白
认为, 觉得, 以为
确定, 肯定, 一定
请问, 麻烦问一下, 想问一下
谢谢, 感谢, 多谢
你好, 您好, 嗨
再见, 拜拜
抱歉, 对不起, 不好意思
笔记本电脑, 笔记本, 手提电脑
手机, 移动电话, 智能手机
耳机, 耳麦
背包, 双肩包, 书包
外套, 夹克
鞋子, 鞋
自行车, 单车, 脚踏车
汽车, 车子, 轿车
城市, 都市
国家, 国度
地区, 区域, 地方
附近, 周边, 旁边
遥远, 很远
安静, 宁静
寒冷, 冷
天气, 气候
旅行, 旅游, 出行
租用, 租赁, 租
丢失, 遗失, 丢了
被盗, 被偷
安全, 安心, 稳妥
风险, 危险
保修, 质保, 保修服务
保证, 承诺, 担保
促销, 活动, 特价
优惠券, 代金券, 折扣券
礼品, 礼物
礼品卡, 购物卡
现金, 钱
删除, 删掉, 移除
添加, 加入, 增加
提交, 递交
投诉, 抱怨, 申诉
评价, 评论, 反馈
推荐, 建议
比较, 对比
不同, 不一样, 区别
相同, 一样, 一致
全部, 所有, 整个
部分, 一部分
预约, 预订, 预定
登录, 登入
注册, 报名
会员, 会员资格
订阅, 关注
网站, 网页, 官网
应用, 软件, 应用程序
安装, 装上
设置, 设定
重置, 恢复
更新, 升级
早上, 上午, 早晨
晚上, 夜里, 傍晚
最快, 最迅速
最便宜, 最实惠
最好, 最佳
能否, 是否可以, 能不能
多久, 多长时间, 多少时间
怎么, 如何, 怎样
为什么, 为何
什么时候, 何时, 几时
哪里, 什么地方, 哪儿
多少钱, 什么价格
期限, 期间, 时限
运费, 邮费, 配送费
订单, 单子
账单, 费用清单
""".strip()

# Chinese characters (CJK ideographs): runs of them are segmented by dictionary, not by spaces.
CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = re.compile(f"[{CJK_CHARS}]")


def _is_key(word: str) -> bool:
    """Whether `word` can be looked up in text (see the module docstring for why some cannot)."""
    if any(ch.isspace() for ch in word):
        return False
    return not (_CJK.search(word) and len(word) < 2)


def _add_groups(table: dict[str, list[str]], text: str) -> None:
    for line in text.splitlines():
        group = [w.strip() for w in line.split(",") if w.strip()]
        for word in group:
            if _is_key(word):
                key = word.lower()
                others = table.setdefault(key, [])
                others += [w for w in group if w.lower() != key and w not in others]


@functools.lru_cache(maxsize=1)
def _builtin() -> dict[str, tuple[str, ...]]:
    table: dict[str, list[str]] = {}
    _add_groups(table, ENGLISH)
    _add_groups(table, CHINESE)
    return {k: tuple(v) for k, v in table.items()}


def builtin_synonyms() -> dict[str, list[str]]:
    """The built-in bilingual dictionary: lower-cased English word or Chinese word -> its synonyms."""
    return {k: list(v) for k, v in _builtin().items()}


def load_dictionary(path: str | Path) -> dict[str, list[str]]:
    """Read a user synonym file: JSON {word: [synonym, ...]} or TSV lines `word<TAB>syn1,syn2`.

    TSV lines that are blank or start with '#' are skipped; Chinese commas separate synonyms too.
    """
    p = Path(path)
    fix = "write JSON {\"word\": [\"synonym\", ...]} or TSV lines 'word<TAB>synonym1,synonym2'"
    if not p.is_file():
        raise TailorError(f"synonym dictionary not found: {p}", where="data.augment.eda.dictionary",
                          fix="check the path (relative paths are read from the recipe's folder)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TailorError("synonym dictionary is not UTF-8 text", where=str(p), fix=fix) from None
    table: dict[str, list[str]] = {}
    if p.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise TailorError(f"synonym dictionary is not valid JSON: {e.msg}", where=f"{p}:{e.lineno}:{e.colno}",
                              fix=fix) from None
        if not isinstance(raw, dict):
            raise TailorError("synonym dictionary must be a JSON object", where=str(p), fix=fix)
        for word, syns in raw.items():
            if not isinstance(syns, list) or not all(isinstance(s, str) and s.strip() for s in syns):
                raise TailorError(f"synonyms of '{word}' must be a list of non-empty strings", where=f"{p} key '{word}'",
                                  fix=fix)
            _add_entry(table, word, syns, f"{p} key '{word}'")
        return table
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, tab, rest = line.partition("\t")
        syns = [s.strip() for s in re.split(r"[,，]", rest) if s.strip()]
        if not tab or not syns:
            raise TailorError("a dictionary line must be 'word<TAB>synonym1,synonym2'", where=f"{p}:{n}", fix=fix)
        _add_entry(table, word, syns, f"{p}:{n}")
    return table


def _add_entry(table: dict[str, list[str]], word: str, syns: list[str], where: str) -> None:
    word = word.strip()
    if not word or not _is_key(word):
        raise TailorError(f"dictionary word '{word}' cannot be matched in text "
                          "(it is empty, contains spaces, or is a single Chinese character)", where=where,
                          fix="use single words as keys; phrases may appear as synonyms")
    others = table.setdefault(word.lower(), [])
    others += [s.strip() for s in syns if s.strip().lower() != word.lower() and s.strip() not in others]


def merged_synonyms(user_file: str | Path | None = None) -> dict[str, list[str]]:
    """The built-in dictionary plus a user file's entries (a user word's synonyms extend the built-in ones)."""
    table = builtin_synonyms()
    if user_file:
        for word, syns in load_dictionary(user_file).items():
            table[word] = table.get(word, []) + [s for s in syns if s not in table.get(word, [])]
    return table
