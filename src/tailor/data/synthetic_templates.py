"""Wording for the synthetic store domain: question, answer and document templates.

Kept apart from `synthetic.py` because this file is text, not logic. Placeholders:

- `{store}` the store's name; `{v}` the fact's value (must appear verbatim in every answer and
  document sentence, so a model that saw the sentence has seen the value);
- `{sg}` the entity's name, `{Sg}` the same capitalised; for product categories also `{pl}`
  ("laptops"), `{Pl}` and `{one}` ("a laptop"). Chinese has no plural, so in zh every form is
  the same name.

Per topic and language: `questions`, one pool of paraphrases a customer might write (short direct
questions mixed with chatty, contextual ones); `answer` templates (shared by train and eval
references), `doc` sentences (pretraining prose) and a `spec` line used on product pages.

Held-out templates are a fixed subset of one paraphrase pool, so evaluation asks the same kind of
questions in wordings never seen in training. The rule looks only at positions, never at wording:
the questions at `HELD_OUT_POSITIONS` (2, 7 and 12) of each pool become that topic and language's
`eval` templates, all the others its `train` templates; both lists are derived below the data, so
`TEMPLATES[topic][lang]["train"]` and `["eval"]` exist alongside `["questions"]`.

Every answer names the entity (and the store, region or city) before the value, so a model writes
which fact it is stating before it has to produce the value.
"""

from __future__ import annotations

# Positions in each question pool that are held out for evaluation (see the module docstring).
HELD_OUT_POSITIONS = (2, 7, 12)

TEMPLATES: dict[str, dict[str, dict[str, list[str]]]] = {
    "return_window": {
        "en": {
            "questions": [
                "What is the return window for {pl}?",
                "How many days do I have to return {one}?",
                "If I change my mind about {one}, how long do I have to send it back?",
                "How long can I return {pl} after delivery?",
                "What's your return policy on {pl}?",
                "I bought {one} last week and I'm not sure I like it. How long is it returnable?",
                "Can you tell me the return period for {pl}?",
                "Is there a time limit on bringing {pl} back for a refund?",
                "How long do I have to return {one} bought at {store}?",
                "I received {one} yesterday. By when must it go back if I don't want it?",
                "When is the deadline to return {one}?",
                "How much time do I get to send back {pl}?",
                "What is the return deadline for {pl} at {store}?",
                "My order came with {one} that isn't what I expected. How long can I still return it?",
                "Are {pl} returnable, and for how many days?",
            ],
            "answer": [
                "The return window for {pl} is {v}.",
                "{Pl} can be returned within {v} of delivery.",
                "At {store}, {pl} can be returned within {v} of delivery.",
            ],
            "doc": [
                "{Pl} may be returned within {v} of delivery for a full refund.",
                "The return window for {pl} is {v}.",
                "If you are not happy with {one}, you can send it back within {v}.",
                "Returns of {pl} are accepted for {v} after the delivery date.",
                "Customers have {v} to return {pl}.",
            ],
        },
        "zh": {
            "questions": [
                "{sg}的退货期限是多久？",
                "{sg}可以在多少天内退货？",
                "如果我买了{sg}之后改变主意，有多长时间可以寄回去？",
                "买了{sg}多久之内可以退？",
                "{store}的{sg}退货政策是什么？",
                "上周买的{sg}不太满意，最晚什么时候之前还能退？",
                "请问{sg}的退货期是几天？",
                "拿{sg}回来退款有没有时间限制？",
                "{sg}收货后多长时间内能退货？",
                "昨天刚收到{sg}，要是不想要了，最晚什么时候要退回？",
                "{sg}退货的截止时间是多久？",
                "我想了解一下{sg}的退货时限。",
                "{sg}有多少天的退货期？",
                "{sg}到货了但和我想的不一样，还能退多久？",
                "{sg}支持退货吗？期限是多久？",
            ],
            "answer": [
                "{sg}的退货期限是{v}。",
                "{sg}可以在收货后{v}内退货。",
                "{store}的{sg}支持收货后{v}内退货。",
            ],
            "doc": [
                "{sg}自签收之日起{v}内可以退货并全额退款。",
                "{sg}的退货期限为{v}。",
                "如果您对{sg}不满意，可以在{v}内寄回。",
                "我们接受{sg}在送达后{v}内的退货申请。",
                "购买{sg}的顾客有{v}的时间办理退货。",
            ],
        },
    },
    "warranty": {
        "en": {
            "questions": [
                "What is the warranty on the {sg}?",
                "How long is the warranty for the {sg}?",
                "If my {sg} breaks after a while, until when will {store} fix it for free?",
                "How long does the {sg} warranty last?",
                "Does the {sg} come with a warranty? For how long?",
                "I'm worried the {sg} might fail. How long am I protected by the manufacturer's guarantee?",
                "Can you tell me the warranty period of the {sg}?",
                "How long is the {sg} covered if something goes wrong?",
                "What warranty do I get with the {sg} from {store}?",
                "For how long after purchase are defects in the {sg} taken care of?",
                "What's the guarantee on the {sg}?",
                "How long is the {sg} under warranty?",
                "What is the warranty length for the {sg} at {store}?",
                "I'm about to buy the {sg}. How long will the warranty cover it?",
                "Is the {sg} guaranteed, and for how long?",
            ],
            "answer": [
                "The {sg} is covered by a warranty of {v}.",
                "The warranty on the {sg} lasts {v}.",
                "At {store}, the {sg} comes with a warranty of {v}.",
            ],
            "doc": [
                "The {sg} is covered by a warranty of {v}.",
                "Warranty coverage for the {sg} lasts {v} from the date of purchase.",
                "Every {sg} is protected against defects for {v}.",
                "The warranty period of the {sg} is {v}.",
                "If the {sg} develops a defect within {v}, we repair or replace it free of charge.",
            ],
            "spec": ["Warranty: {v}."],
        },
        "zh": {
            "questions": [
                "{sg}的保修期是多久？",
                "{sg}保修多长时间？",
                "如果{sg}用了一段时间坏了，{store}免费维修到什么时候？",
                "请问{sg}的质保期是多久？",
                "{sg}有保修吗？保多久？",
                "担心{sg}会出故障，厂家的保障能管多长时间？",
                "{store}的{sg}保修多久？",
                "{sg}出了问题，多长时间内可以免费修？",
                "购买{sg}享受多长时间的保修？",
                "{sg}买了以后出现质量问题，多久以内都能免费处理？",
                "{sg}的质保有多久？",
                "我想问一下{sg}的保修时间。",
                "{sg}的保修期限是多少？",
                "我准备买{sg}，保修能管多久？",
                "{sg}的售后保修是多长时间？",
            ],
            "answer": [
                "{sg}的保修期是{v}。",
                "{sg}自购买之日起保修{v}。",
                "{store}为{sg}提供{v}的质保。",
            ],
            "doc": [
                "{sg}享有{v}的保修服务。",
                "{sg}自购买之日起保修{v}。",
                "{sg}的质保期为{v}。",
                "{sg}在{v}内如出现质量问题，我们免费维修或更换。",
                "我们为{sg}提供为期{v}的质保。",
            ],
            "spec": ["保修：{v}。"],
        },
    },
    "shipping_time": {
        "en": {
            "questions": [
                "How long does shipping to {sg} take?",
                "What is the delivery time to {sg}?",
                "I just placed an order and I live in {sg}. When should I expect the parcel?",
                "How many days does delivery to {sg} take?",
                "How fast do you ship to {sg}?",
                "My friend in {sg} wants to buy from you; how long will her package be on the way?",
                "What are the shipping times for {sg}?",
                "If I order today, how long until it gets to me in {sg}?",
                "How long does it take for an order to reach {sg}?",
                "Roughly how long will a box from {store} spend in transit to {sg}?",
                "What is the standard shipping time to {sg} from {store}?",
                "How long is delivery to {sg}?",
                "When would a package shipped to {sg} arrive?",
                "I'm sending a gift to someone in {sg}. How long will it take to get there?",
                "Do you deliver to {sg}, and how long does it take?",
            ],
            "answer": [
                "Shipping to {sg} takes {v}.",
                "Standard delivery to {sg} takes {v}.",
                "Orders to {sg} usually arrive in {v}.",
            ],
            "doc": [
                "Standard shipping to {sg} takes {v}.",
                "Orders delivered to {sg} usually arrive within {v}.",
                "Customers in {sg} receive their packages in {v}.",
                "Delivery time to {sg}: {v}.",
                "Parcels sent to {sg} are in transit for {v}.",
            ],
        },
        "zh": {
            "questions": [
                "寄到{sg}要多久？",
                "发货到{sg}需要几天？",
                "我刚下了单，住在{sg}，包裹大概什么时候能送到？",
                "{sg}的配送时间是多久？",
                "送到{sg}一般要多长时间？",
                "我朋友在{sg}想从你们这儿买东西，她的包裹路上要走多久？",
                "{store}发往{sg}的快递要几天？",
                "今天下单的话，寄到{sg}几天能收到？",
                "请问配送到{sg}需要多少个工作日？",
                "从{store}寄一个箱子到{sg}大概在路上多久？",
                "{sg}的订单多久能到？",
                "从{sg}下单后多久能收到？",
                "{sg}的运输时效是多少？",
                "我想给{sg}的家人寄份礼物，快递要走几天？",
                "你们能送到{sg}吗？大概要几天？",
            ],
            "answer": [
                "寄往{sg}的订单需要{v}。",
                "{sg}的标准配送时间是{v}。",
                "配送到{sg}通常需要{v}。",
            ],
            "doc": [
                "寄往{sg}的标准配送需要{v}。",
                "发往{sg}的订单通常在{v}内送达。",
                "{sg}的顾客一般在{v}内收到包裹。",
                "配送至{sg}的时效：{v}。",
                "寄到{sg}的包裹运输时间为{v}。",
            ],
        },
    },
    "store_hours": {
        "en": {
            "questions": [
                "What are the opening hours of the {sg} store?",
                "When is your {sg} store open?",
                "I'm in {sg} this weekend. When can I drop by your shop?",
                "What time does the {sg} store open and close?",
                "What are the store hours in {sg}?",
                "Is your branch in {sg} open in the evening? What does its schedule look like?",
                "When can I visit the {store} store in {sg}?",
                "What are the business hours of your {sg} location?",
                "I want to pick up an order at the {sg} store. From what time to what time is it staffed?",
                "How late is the {sg} store open?",
                "Tell me the opening times for the {sg} shop.",
                "I'd like to try on some boots at your {sg} shop. When are you open?",
                "When does the {sg} store open in the morning and close at night?",
                "What hours is {store} {sg} open?",
                "Is the {sg} store open today? What are its hours?",
            ],
            "answer": [
                "The {sg} store is open from {v}.",
                "Store hours in {sg} are {v}.",
                "The {store} store in {sg} is open from {v}, every day.",
            ],
            "doc": [
                "The {sg} store is open daily from {v}.",
                "Opening hours in {sg}: {v}.",
                "Our {sg} shop welcomes customers from {v}, seven days a week.",
                "Visit us in {sg} any day from {v}.",
                "The {sg} location keeps hours of {v}.",
            ],
        },
        "zh": {
            "questions": [
                "{sg}门店的营业时间是几点到几点？",
                "{sg}店什么时候开门？",
                "我这周末在{sg}，什么时候可以去你们店里逛逛？",
                "{sg}的店几点开门几点关门？",
                "{store}{sg}店的营业时间是什么？",
                "你们在{sg}的分店晚上开门吗？具体是怎么安排的？",
                "请问{sg}门店每天营业到几点？",
                "{sg}分店的营业时间是多少？",
                "我想去{sg}门店自提订单，店里从几点到几点有人？",
                "{sg}实体店的开放时间是？",
                "我想知道{sg}门店的营业时间。",
                "想去{sg}的店里试穿登山靴，你们几点营业？",
                "{sg}门店早上几点开门，晚上几点关门？",
                "{sg}的{store}几点营业？",
                "今天{sg}门店开吗？营业时间是？",
            ],
            "answer": [
                "{sg}门店的营业时间是{v}。",
                "{sg}店每天{v}营业。",
                "{store}{sg}店的营业时间为{v}。",
            ],
            "doc": [
                "{sg}门店每天{v}营业。",
                "{sg}店营业时间：{v}。",
                "我们的{sg}分店每周七天{v}欢迎您光临。",
                "{sg}门店的开放时间为{v}。",
                "欢迎您每天{v}到{sg}店选购。",
            ],
        },
    },
    "price": {
        "en": {
            "questions": [
                "How much is the {sg}?",
                "What does the {sg} cost?",
                "I'm thinking of buying the {sg}. What would I pay for it?",
                "What is the price of the {sg}?",
                "How much does the {sg} cost at {store}?",
                "My budget is tight; what's the damage for the {sg}?",
                "What's the {sg} selling for?",
                "Can you tell me the price of the {sg}?",
                "Before checking out, I'd like to know how many dollars the {sg} is.",
                "How much do you charge for the {sg}?",
                "What is the current price for the {sg}?",
                "How much would the {sg} set me back?",
                "What's the price tag on the {sg}?",
                "I saw the {sg} on your site. What does it go for?",
                "I want to get the {sg} as a gift. How much is it?",
            ],
            "answer": [
                "The {sg} costs {v}.",
                "The price of the {sg} is {v}.",
                "At {store}, the {sg} sells for {v}.",
            ],
            "doc": [
                "The {sg} is priced at {v}.",
                "The {sg} costs {v}.",
                "Buy the {sg} today for {v}.",
                "Price of the {sg}: {v}.",
                "The {sg} retails for {v} at {store}.",
            ],
            "spec": ["Price: {v}."],
        },
        "zh": {
            "questions": [
                "{sg}多少钱？",
                "{sg}的价格是多少？",
                "我打算买{sg}，需要付多少钱？",
                "{sg}卖多少钱？",
                "{store}的{sg}售价是多少？",
                "预算有点紧，{sg}得花多少？",
                "请问{sg}怎么卖？",
                "{sg}现在什么价格？",
                "结账之前想确认一下，{sg}要多少美元？",
                "买一个{sg}要多少钱？",
                "我想知道{sg}的价格。",
                "在你们网站上看到了{sg}，标价是多少？",
                "{sg}的售价是？",
                "想买{sg}送朋友，要花多少钱？",
                "{sg}贵不贵？具体多少钱？",
            ],
            "answer": [
                "{sg}的价格是{v}。",
                "{sg}的售价是{v}。",
                "{store}的{sg}售价{v}。",
            ],
            "doc": [
                "{sg}售价{v}。",
                "{sg}的价格为{v}。",
                "现在只需{v}即可购买{sg}。",
                "{sg}价格：{v}。",
                "{store}的{sg}零售价为{v}。",
            ],
            "spec": ["价格：{v}。"],
        },
    },
    "weight": {
        "en": {
            "questions": [
                "How much does the {sg} weigh?",
                "What is the weight of the {sg}?",
                "I'm counting every gram for a long hike. What will the {sg} add to my load?",
                "How heavy is the {sg}?",
                "What does the {sg} weigh?",
                "Could my kid carry the {sg}? I need to know what it comes to on a scale.",
                "Can you tell me the weight of the {sg}?",
                "What's the {sg}'s weight?",
                "If I put the {sg} on the bathroom scale, what number shows up?",
                "How much weight does the {sg} add to my pack?",
                "Is the {sg} heavy? How much does it weigh?",
                "What is the listed weight of the {sg} at {store}?",
                "How light is the {sg}?",
                "I have to carry the {sg} a long way. How heavy is it?",
                "I'm packing for a trip; what does the {sg} weigh?",
            ],
            "answer": [
                "The {sg} weighs {v}.",
                "The weight of the {sg} is {v}.",
                "The listed weight of the {sg} is {v}.",
            ],
            "doc": [
                "The {sg} weighs {v}.",
                "Weighing just {v}, the {sg} is easy to carry.",
                "Weight of the {sg}: {v}.",
                "The {sg} tips the scales at {v}.",
                "At {v}, the {sg} packs into the car without trouble.",
            ],
            "spec": ["Weight: {v}."],
        },
        "zh": {
            "questions": [
                "{sg}有多重？",
                "{sg}的重量是多少？",
                "长途徒步我每一克都要算，{sg}会给背包增加多少分量？",
                "{sg}重吗？有多重？",
                "{sg}净重多少？",
                "我家孩子背得动{sg}吗？放到秤上是多少？",
                "请问{sg}的重量是？",
                "{store}的{sg}多重？",
                "把{sg}放到体重秤上，会显示多少？",
                "{sg}的重量大概是多少？",
                "我想知道{sg}的重量。",
                "{sg}的标称重量是多少？",
                "{sg}轻不轻？具体多重？",
                "我要背着{sg}走很远，它有多沉？",
                "出门前收拾行李，{sg}大概多重？",
            ],
            "answer": [
                "{sg}重{v}。",
                "{sg}的重量是{v}。",
                "{sg}的净重为{v}。",
            ],
            "doc": [
                "{sg}重{v}。",
                "{sg}的重量为{v}。",
                "{sg}净重{v}，携带方便。",
                "{sg}整机重量{v}。",
                "{sg}的标称重量是{v}。",
            ],
            "spec": ["重量：{v}。"],
        },
    },
    "battery_life": {
        "en": {
            "questions": [
                "What is the battery life of the {sg}?",
                "How long does the {sg} battery last?",
                "I'm going off-grid. If I fully charge the {sg} before leaving, when will it die?",
                "How long will the {sg} run on a full charge?",
                "How long can I use the {sg} on one charge?",
                "How often will I need to plug in the {sg}?",
                "What's the {sg}'s battery life?",
                "Can you tell me how long the battery of the {sg} lasts?",
                "Will the {sg} survive a long trip without a power outlet? What's its endurance?",
                "How long does a charge last on the {sg}?",
                "What battery runtime does the {sg} have?",
                "How long does the {sg} last between charges?",
                "What kind of battery life should I expect from the {sg}?",
                "I always forget to charge things. How long does the {sg} keep going on one charge?",
                "Is the battery on the {sg} any good? How long does it last?",
            ],
            "answer": [
                "The {sg} runs for {v} on a full charge.",
                "The battery of the {sg} lasts {v}.",
                "The {sg} has a battery life of {v}.",
            ],
            "doc": [
                "The {sg} delivers {v} of battery life.",
                "On a full charge, the {sg} runs for {v}.",
                "Battery life of the {sg}: {v}.",
                "The battery in the {sg} lasts up to {v}.",
                "With {v} between charges, the {sg} keeps going.",
            ],
            "spec": ["Battery life: {v}."],
        },
        "zh": {
            "questions": [
                "{sg}的续航时间是多久？",
                "{sg}的电池能用多久？",
                "我要去没有电的地方，出发前把{sg}充满，它什么时候会没电？",
                "{sg}充满电能用多长时间？",
                "{sg}续航怎么样？能撑多久？",
                "{sg}多久需要插一次电？",
                "请问{sg}的电池续航是多少？",
                "{sg}一次充电可以用多久？",
                "{sg}撑得住没有插座的长途旅行吗？电量能坚持多长时间？",
                "{store}的{sg}续航多长？",
                "我想知道{sg}的续航时间。",
                "{sg}两次充电之间能用多久？",
                "{sg}的电池耐用吗？能用多长时间？",
                "我经常忘记充电，{sg}充一次电能坚持多久？",
                "出门露营几天，{sg}的电够用多久？",
            ],
            "answer": [
                "{sg}的续航时间是{v}。",
                "{sg}充满电可以使用{v}。",
                "{sg}的电池可以持续{v}。",
            ],
            "doc": [
                "{sg}的续航时间长达{v}。",
                "充满电后，{sg}可以连续使用{v}。",
                "{sg}电池续航：{v}。",
                "{sg}的电池最多可以使用{v}。",
                "{sg}一次充电可用{v}。",
            ],
            "spec": ["续航：{v}。"],
        },
    },
    "capacity": {
        "en": {
            "questions": [
                "What is the capacity of the {sg}?",
                "How much does the {sg} hold?",
                "If I fill the {sg} all the way up, how much fits inside?",
                "How big is the {sg}'s capacity?",
                "What capacity does the {sg} have?",
                "I'm comparing options; how much can the {sg} take when it's full?",
                "Can you tell me the capacity of the {sg}?",
                "How much can the {sg} store?",
                "Is the {sg} big enough for me? Tell me how much it takes when full.",
                "What's the {sg} capacity?",
                "How large is the {sg} in terms of capacity?",
                "What is the rated capacity of the {sg} at {store}?",
                "How much fits in the {sg}?",
                "I need something for a weekend trip. How much will the {sg} hold?",
                "What size is the {sg}, capacity-wise?",
            ],
            "answer": [
                "The {sg} has a capacity of {v}.",
                "The capacity of the {sg} is {v}.",
                "The {sg} holds {v}.",
            ],
            "doc": [
                "The {sg} has a capacity of {v}.",
                "With {v} of capacity, the {sg} handles long trips.",
                "Capacity of the {sg}: {v}.",
                "The {sg} holds {v}.",
                "The {sg} is rated at {v}.",
            ],
            "spec": ["Capacity: {v}."],
        },
        "zh": {
            "questions": [
                "{sg}的容量是多少？",
                "{sg}能装多少？",
                "如果把{sg}装满，里面能放下多少？",
                "{sg}容量多大？",
                "请问{sg}的容量是？",
                "我在比较几款产品，{sg}满载时能容纳多少？",
                "{store}的{sg}容量是多少？",
                "{sg}的额定容量是多少？",
                "{sg}够我用吗？告诉我它装满时有多少。",
                "我想知道{sg}的容量。",
                "{sg}有多大容量？",
                "{sg}的最大容量是多少？",
                "{sg}装得多吗？具体容量是多少？",
                "周末出去玩，{sg}能装下多少？",
                "买{sg}之前想确认一下，它的容量有多大？",
            ],
            "answer": [
                "{sg}的容量是{v}。",
                "{sg}可容纳{v}。",
                "{sg}的额定容量为{v}。",
            ],
            "doc": [
                "{sg}的容量为{v}。",
                "{sg}拥有{v}的容量，适合长途旅行。",
                "{sg}容量：{v}。",
                "{sg}可容纳{v}。",
                "{sg}的额定容量是{v}。",
            ],
            "spec": ["容量：{v}。"],
        },
    },
    "policy": {
        "en": {
            "questions": [
                "What is the {sg} at {store}?",
                "What is your {sg}?",
                "Quick question about store policy: what's the {sg} these days?",
                "Can you tell me the {sg}?",
                "What's the {sg}?",
                "I couldn't find the {sg} anywhere on your website. Can you help?",
                "I'd like to know the {sg}.",
                "Could you explain the {sg}?",
                "Before I place an order, I want to check the {sg}. What is it?",
                "Please tell me your {sg}.",
                "What {sg} does {store} have?",
                "Do you know what the {sg} is?",
                "What's your current {sg}?",
                "I'm new to {store}. What is the {sg}?",
                "Remind me, what is the {sg}?",
            ],
            "answer": [
                "The {sg} is {v}.",
                "Our {sg} is {v}.",
                "At {store}, the {sg} is {v}.",
            ],
            "doc": [
                "The {sg} is {v}.",
                "Our {sg} is currently {v}.",
                "Please note that the {sg} is {v}.",
                "{store} policy: the {sg} is {v}.",
                "Good to know: our {sg} is {v}.",
            ],
        },
        "zh": {
            "questions": [
                "{store}的{sg}是什么？",
                "{sg}是什么？",
                "问一下店铺政策：现在的{sg}是多少？",
                "请问你们的{sg}是怎样的？",
                "能告诉我{sg}吗？",
                "我在你们网站上找不到{sg}，能帮我查一下吗？",
                "我想了解一下{sg}。",
                "{sg}具体是怎么规定的？",
                "下单之前我想确认一下{sg}，具体是什么？",
                "你们的{sg}怎么规定？",
                "请介绍一下{sg}。",
                "{sg}现在是什么标准？",
                "麻烦说一下你们的{sg}。",
                "我第一次在{store}买东西，{sg}是多少？",
                "{sg}有什么规定？",
            ],
            "answer": [
                "{sg}是{v}。",
                "{store}的{sg}是{v}。",
                "我们的{sg}为{v}。",
            ],
            "doc": [
                "{sg}为{v}。",
                "我们目前的{sg}是{v}。",
                "请注意，{sg}为{v}。",
                "{store}规定：{sg}为{v}。",
                "温馨提示：我们的{sg}是{v}。",
            ],
        },
    },
}

# The split rule of the module docstring: held-out positions of each pool become `eval`, the rest `train`.
for _langs in TEMPLATES.values():
    for _kinds in _langs.values():
        _kinds["eval"] = [q for i, q in enumerate(_kinds["questions"]) if i in HELD_OUT_POSITIONS]
        _kinds["train"] = [q for i, q in enumerate(_kinds["questions"]) if i not in HELD_OUT_POSITIONS]
del _langs, _kinds

# (title, intro, outro) of each topic's page, per language.
PAGES: dict[str, dict[str, tuple[str, str, str]]] = {
    "return_window": {
        "en": ("Returns policy",
               "At {store}, most items can be returned for a full refund. The return window depends on the product category.",
               "Items must come back in their original condition with proof of purchase."),
        "zh": ("退货政策", "在{store}，大部分商品都可以退货并全额退款。退货期限因商品类别而异。",
               "退回的商品需保持原状并附购买凭证。"),
    },
    "warranty": {
        "en": ("Warranty information",
               "Every product we sell is covered by a warranty. Coverage periods are listed below.",
               "Keep your receipt to make a warranty claim."),
        "zh": ("保修说明", "我们销售的每件商品都享有保修，具体保修期限如下。", "申请保修时请保留购物凭证。"),
    },
    "shipping_time": {
        "en": ("Shipping and delivery",
               "We ship from our warehouse in Oregon. Delivery times depend on where you live.",
               "You will receive a tracking number by email once your order ships."),
        "zh": ("配送说明", "我们从俄勒冈州的仓库发货，配送时间取决于您所在的地区。",
               "订单发货后，您会通过电子邮件收到物流单号。"),
    },
    "store_hours": {
        "en": ("Store locations and hours",
               "{store} runs retail stores in several cities. Here are the opening hours of each store.",
               "Hours may change on public holidays."),
        "zh": ("门店与营业时间", "{store}在多个城市开设了实体门店，以下是各门店的营业时间。",
               "法定节假日营业时间可能调整。"),
    },
    "price": {
        "en": ("Price list", "Current prices at {store}, in US dollars.", "Prices are subject to change."),
        "zh": ("价格表", "{store}当前商品价格（美元）。", "价格如有变动，以官网为准。"),
    },
    "weight": {
        "en": ("Packing weight guide", "Planning a trip? Here is what our popular items weigh.",
               "Weights are measured without packaging."),
        "zh": ("装备重量指南", "计划出行？以下是热门商品的重量。", "重量不含包装。"),
    },
    "battery_life": {
        "en": ("Battery life guide", "Battery life of our electronics, measured in typical use.",
               "Cold weather can shorten battery life."),
        "zh": ("电池续航指南", "以下是我们电子产品在典型使用下的续航时间。", "低温环境可能缩短续航时间。"),
    },
    "capacity": {
        "en": ("Capacity guide", "How much our packs, coolers, bottles and power banks hold.",
               "Choose the size that fits your trip."),
        "zh": ("容量指南", "我们的背包、保温箱、水壶和移动电源的容量如下。", "请根据行程选择合适的容量。"),
    },
    "policy": {
        "en": ("Store policies", "The fine print of shopping at {store}, in plain words.",
               "Questions? Our support team is happy to help."),
        "zh": ("商店政策", "用简单的话说明在{store}购物的各项规定。", "如有疑问，欢迎联系客服团队。"),
    },
}

# Page furniture that is not tied to a topic.
PRODUCT_PAGE_TITLE = {"en": "{sg} | {store}", "zh": "{sg} | {store}"}
FAQ_TITLE = {"en": "Frequently asked questions | {store}", "zh": "常见问题 | {store}"}
FAQ_PAIR = {"en": "Q: {q}\nA: {a}", "zh": "问：{q}\n答：{a}"}
# English sentences need a space between them; Chinese ones do not.
SENTENCE_JOIN = {"en": " ", "zh": ""}
