"""Broad off-domain TRAINING questions for bench/bench_preference.py (--train-set broad): many more wordings x
subjects, in English and Chinese, than the first set (bench_preference.TRAIN_EN/TRAIN_ZH), so that "not about the
store" is learned from the question's frame and not from a few surface words.

Written as a generic spread of what users ask a chat assistant (general knowledge, how-to, opinions, small talk,
coding, health, money, travel, school, entertainment...), plus questions that name a store word (a product, a
shipping country) in a frame that is not about the store, so that a store word alone does not mean "store fact".
They never use a held-out wording, a held-out subject or a held-out frame's distinctive words:
bench_preference.check_disjoint asserts it every run.
"""

from __future__ import annotations

BROAD_EN = [
    ("What is the capital of {}?", ["France", "Japan", "Brazil", "Kenya", "Norway", "Peru", "Germany", "Spain",
                                     "Mexico", "Sweden", "Vietnam", "Greece", "Poland", "Turkey", "Argentina"]),
    ("Who wrote the novel {}?", ["Hamlet", "Don Quixote", "War and Peace", "Moby Dick", "Ulysses", "Dracula",
                                 "Frankenstein", "Jane Eyre"]),
    ("How tall is {}?", ["Mount Everest", "the Eiffel Tower", "Mount Fuji", "the Statue of Liberty", "Big Ben",
                         "the Burj Khalifa", "a giraffe"]),
    ("Can you tell me a joke about {}?", ["cats", "penguins", "lawyers", "doctors", "teachers", "robots", "pirates"]),
    ("What will the weather be like in {} tomorrow?", ["Paris", "Tokyo", "Cairo", "London", "Sydney", "Moscow",
                                                        "Berlin", "Rome"]),
    ("What is {}?", ["7 times 8", "the square root of 81", "15 plus 27", "100 divided by 4", "12 squared",
                     "the speed of light", "the largest ocean", "a prime number", "democracy", "gravity"]),
    ("How do I cook {}?", ["rice", "pasta", "a steak", "pancakes", "soup", "bread", "an omelette", "curry"]),
    ("Who is the best {} player of all time?", ["tennis", "chess", "basketball", "golf", "baseball"]),
    ("When did {} happen?", ["the French Revolution", "the moon landing", "World War One", "the fall of Rome",
                             "the Renaissance", "the Industrial Revolution"]),
    ("Why is {}?", ["the sky blue", "the sea salty", "grass green", "ice slippery", "the sun hot", "snow white"]),
    ("Write a Python function that {}.", ["sorts a list", "reverses a string", "checks for palindromes",
                                          "counts words", "adds two numbers"]),
    ("What should I take for {}?", ["a headache", "a cold", "a sore throat", "a fever", "back pain"]),
    ("Translate '{}' into German.", ["good morning", "thank you", "where is the station", "I love you"]),
    ("Who sang the song {}?", ["Yesterday", "Thriller", "Imagine", "Hallelujah", "Bohemian Rhapsody"]),
    ("How many legs does {} have?", ["a spider", "an octopus", "a crab", "an ant", "a centipede"]),
    ("Who painted {}?", ["the Mona Lisa", "The Starry Night", "The Scream", "Guernica", "The Last Supper"]),
    ("Who invented {}?", ["the telephone", "the light bulb", "the printing press", "the airplane", "the radio",
                          "the laptop", "headphones", "the bicycle"]),
    ("What does the word '{}' mean?", ["serendipity", "ephemeral", "ubiquitous", "melancholy", "nostalgia"]),
    ("How do you say '{}' in French?", ["hello", "goodbye", "cheese", "good night", "please"]),
    ("What is the boiling point of {}?", ["water", "alcohol", "oil", "mercury"]),
    ("Give me a recipe for {}.", ["chocolate cake", "lemonade", "guacamole", "apple pie", "fried rice"]),
    ("Tell me a fun fact about {}.", ["elephants", "octopuses", "the moon", "honey", "volcanoes", "sharks"]),
    ("What is the meaning of {}?", ["life", "this dream I had", "the color red", "my name"]),
    ("How do I fix {}?", ["a leaking tap", "a flat tire on my car", "a slow computer", "a squeaky door",
                          "a broken zipper on my jeans"]),
    ("Is it healthy to eat {} every day?", ["eggs", "chocolate", "bananas", "rice", "cheese"]),
    ("How far is {} from the Earth?", ["the Moon", "the Sun", "Mars", "Jupiter"]),
    ("What language do people speak in {}?", ["Brazil", "Austria", "Iran", "Belgium", "Switzerland"]),
    ("Write a poem about {}.", ["the ocean", "autumn", "love", "my cat", "the city at night"]),
    ("Write a short story about {}.", ["a dragon", "a lost key", "a talking dog", "a haunted house"]),
    ("Summarize the plot of {}.", ["Romeo and Juliet", "Cinderella", "Macbeth", "Snow White"]),
    ("What are the rules of {}?", ["chess", "poker", "rugby", "cricket", "go"]),
    ("How do I learn to play {}?", ["the guitar", "the piano", "the violin", "the drums"]),
    ("What is the best way to learn {}?", ["Spanish", "Japanese", "to code", "to swim", "to draw"]),
    ("Should I invest in {}?", ["gold", "bitcoin", "real estate", "bonds"]),
    ("How do I write a {}?", ["cover letter", "resume", "wedding speech", "love letter", "thank-you note"]),
    ("What is the difference between {}?", ["a virus and a bacterium", "weather and climate", "a crocodile and an "
                                            "alligator", "baking soda and baking powder"]),
    ("Which is bigger, {}?", ["the Sun or the Earth", "an elephant or a whale", "Russia or Brazil"]),
    ("How many {} are there?", ["planets in the solar system", "bones in the human body", "days in a leap year",
                                "strings on a guitar", "players on a soccer team"]),
    ("What year was {} born?", ["Albert Einstein", "Mozart", "Shakespeare", "Napoleon", "Confucius"]),
    ("Who is {}?", ["the president of France", "Lionel Messi", "Taylor Swift", "Isaac Newton", "Marie Curie"]),
    ("Can you describe {} to a child?", ["electricity", "the internet", "rainbows", "taxes", "vaccines"]),
    ("What do you think about {}?", ["modern art", "social media", "video games", "self-driving cars", "jazz"]),
    ("Do you like {}?", ["pizza", "dogs", "rainy days", "thunderstorms", "poetry"]),
    ("Can you help me plan a trip to {}?", ["Paris", "Thailand", "Iceland", "New Zealand", "Morocco"]),
    ("What time is it in {} right now?", ["Tokyo", "New Delhi", "Berlin", "Sao Paulo"]),
    ("How do I get rid of {}?", ["ants in my kitchen", "hiccups", "a cough", "stress", "bad breath"]),
    ("Is {} a fruit or a vegetable?", ["a tomato", "a cucumber", "an avocado", "a pumpkin"]),
    ("What is the chemical symbol for {}?", ["gold", "iron", "sodium", "silver", "oxygen"]),
    ("Solve this equation: {}.", ["2x + 3 = 11", "x squared = 49", "5x - 5 = 20"]),
    ("How do I train my {} to sit?", ["dog", "puppy", "parrot"]),
    ("What are the symptoms of {}?", ["the flu", "diabetes", "asthma", "allergies"]),
    ("What is your favorite {}?", ["color", "food", "book", "animal", "song"]),
    ("How does {} make money?", ["Google", "a bank", "a newspaper", "Netflix"]),
    ("Why do {}?", ["cats purr", "birds migrate", "leaves change color", "we dream", "people yawn"]),
    ("What is a good name for my {}?", ["new puppy", "baby girl", "band", "startup"]),
    ("How do you convert {}?", ["Celsius to Fahrenheit", "miles to kilometers", "pounds to kilograms"]),
    ("Where do {} live?", ["penguins", "kangaroos", "polar bears", "pandas"]),
    ("Tell me about {}.", ["the Roman Empire", "quantum physics", "the Great Wall", "the Amazon rainforest",
                           "Buddhism", "the Olympic Games"]),
    ("Who discovered {}?", ["penicillin", "America", "gravity", "electricity", "DNA"]),
    ("How old is {}?", ["the universe", "the Earth", "the pyramids", "the oldest tree"]),
]
# small talk and open requests without a slot
BROAD_EN_PLAIN = ["What is the meaning of life?", "Do you believe in ghosts?", "Are you a human?", "Who made you?",
                  "What is love?", "Tell me something interesting.", "What should I do this weekend?",
                  "Can you write my essay for me?", "I'm bored, entertain me.", "What's the news today?",
                  "Who will win the next election?", "How do I become rich?", "Is the Earth flat?",
                  "What is the best programming language?", "Can you keep a secret?", "How do I lose weight?",
                  "What happens after we die?", "Give me some life advice.",
                  "How do airplanes fly?", "Why do we have to sleep?", "What is artificial intelligence?"]

BROAD_ZH = [
    ("{}的首都是哪里？", ["法国", "日本", "巴西", "肯尼亚", "挪威", "秘鲁", "德国", "西班牙", "墨西哥", "瑞典", "越南",
                         "希腊", "波兰", "土耳其", "阿根廷"]),
    ("《{}》是谁写的？", ["红楼梦", "西游记", "哈姆雷特", "三国演义", "水浒传", "战争与和平", "百年孤独"]),
    ("{}有多高？", ["珠穆朗玛峰", "埃菲尔铁塔", "富士山", "自由女神像", "泰山", "长颈鹿", "上海中心大厦"]),
    ("给我讲一个关于{}的笑话。", ["猫", "企鹅", "律师", "医生", "老师", "机器人", "程序员"]),
    ("明天{}的天气怎么样？", ["巴黎", "东京", "开罗", "伦敦", "悉尼", "莫斯科", "北京", "上海"]),
    ("{}等于多少？", ["7乘8", "81的平方根", "15加27", "100除以4", "12的平方"]),
    ("怎么做{}？", ["米饭", "饺子", "红烧肉", "面条", "包子", "西红柿炒鸡蛋", "蛋糕"]),
    ("{}是什么时候发生的？", ["法国大革命", "登月", "第一次世界大战", "罗马帝国灭亡", "文艺复兴", "工业革命"]),
    ("为什么{}？", ["天空是蓝色的", "海水是咸的", "草是绿色的", "冰很滑", "猫会呼噜", "鸟要迁徙", "人会做梦"]),
    ("用Python写一个{}的函数。", ["排序列表", "反转字符串", "判断回文", "统计单词", "计算阶乘"]),
    ("{}应该吃什么药？", ["头疼", "感冒", "嗓子疼", "发烧", "胃疼"]),
    ("谁是历来最好的{}运动员？", ["网球", "篮球", "乒乓球", "羽毛球"]),
    ("把“{}”翻译成英语。", ["早上好", "谢谢", "我爱你", "火车站在哪里", "生日快乐"]),
    ("《{}》这幅画是谁画的？", ["蒙娜丽莎", "星月夜", "清明上河图", "最后的晚餐"]),
    ("{}是谁发明的？", ["电话", "电灯", "印刷术", "飞机", "造纸术", "笔记本电脑", "自行车"]),
    ("“{}”这个成语是什么意思？", ["画蛇添足", "守株待兔", "亡羊补牢", "对牛弹琴", "井底之蛙"]),
    ("{}的沸点是多少度？", ["水", "酒精", "水银"]),
    ("给我一个{}的做法。", ["巧克力蛋糕", "柠檬水", "苹果派", "炒饭", "酸辣汤"]),
    ("告诉我一个关于{}的有趣知识。", ["大象", "章鱼", "月亮", "蜂蜜", "火山", "鲨鱼"]),
    ("{}坏了怎么修？", ["水龙头", "汽车轮胎", "电脑", "门锁", "裤子拉链"]),
    ("每天吃{}健康吗？", ["鸡蛋", "巧克力", "香蕉", "米饭"]),
    ("{}离地球有多远？", ["月球", "太阳", "火星", "木星"]),
    ("{}人说什么语言？", ["巴西", "奥地利", "伊朗", "比利时", "瑞士"]),
    ("写一首关于{}的诗。", ["大海", "秋天", "爱情", "我的猫", "夜晚的城市"]),
    ("写一个关于{}的短故事。", ["龙", "一把丢失的钥匙", "会说话的狗", "鬼屋"]),
    ("概括一下《{}》的情节。", ["罗密欧与朱丽叶", "灰姑娘", "白雪公主", "西游记"]),
    ("{}的规则是什么？", ["国际象棋", "围棋", "扑克", "橄榄球", "麻将"]),
    ("怎么学{}？", ["吉他", "钢琴", "小提琴", "游泳", "画画", "日语", "编程"]),
    ("我应该投资{}吗？", ["黄金", "比特币", "房地产", "债券"]),
    ("怎么写{}？", ["求职信", "简历", "婚礼致辞", "情书", "感谢信"]),
    ("{}有什么区别？", ["病毒和细菌", "天气和气候", "鳄鱼和短吻鳄", "小苏打和泡打粉"]),
    ("{}有多少个？", ["太阳系的行星", "人体的骨头", "闰年的天数", "吉他的弦"]),
    ("{}是哪一年出生的？", ["爱因斯坦", "莫扎特", "莎士比亚", "拿破仑", "孔子", "李白"]),
    ("{}是谁？", ["法国总统", "梅西", "牛顿", "居里夫人", "姚明"]),
    ("怎么跟小孩讲清楚{}？", ["电", "互联网", "彩虹", "税", "疫苗"]),
    ("你觉得{}怎么样？", ["现代艺术", "社交媒体", "电子游戏", "无人驾驶汽车", "爵士乐"]),
    ("你喜欢{}吗？", ["披萨", "狗", "下雨天", "雷雨", "诗歌"]),
    ("我想去{}旅行，怎么安排？", ["巴黎", "泰国", "冰岛", "新西兰", "摩洛哥", "云南"]),
    ("{}现在几点了？", ["东京", "新德里", "柏林", "纽约"]),
    ("怎么去除{}？", ["厨房里的蚂蚁", "打嗝", "咳嗽", "压力", "口臭"]),
    ("{}是水果还是蔬菜？", ["西红柿", "黄瓜", "牛油果", "南瓜"]),
    ("{}的化学符号是什么？", ["金", "铁", "钠", "银", "氧"]),
    ("解这个方程：{}。", ["2x+3=11", "x的平方=49", "5x-5=20"]),
    ("{}有哪些症状？", ["流感", "糖尿病", "哮喘", "过敏"]),
    ("你最喜欢的{}是什么？", ["颜色", "食物", "书", "动物", "歌"]),
    ("{}是怎么赚钱的？", ["谷歌", "银行", "报纸", "腾讯"]),
    ("给我的{}起个名字。", ["小狗", "女儿", "乐队", "公司"]),
    ("怎么把{}？", ["摄氏度换算成华氏度", "英里换算成公里", "斤换算成公斤"]),
    ("{}生活在哪里？", ["企鹅", "袋鼠", "北极熊", "熊猫"]),
    ("介绍一下{}。", ["罗马帝国", "量子物理", "长城", "亚马逊雨林", "佛教", "奥运会"]),
    ("{}是谁发现的？", ["青霉素", "美洲", "万有引力", "DNA"]),
    ("{}有多少岁了？", ["宇宙", "地球", "金字塔"]),
]
BROAD_ZH_PLAIN = ["人生的意义是什么？", "你相信有鬼吗？", "你是人类吗？", "谁创造了你？", "什么是爱情？", "给我讲点有趣的事。",
                  "这个周末我该做什么？", "你能帮我写论文吗？", "我好无聊，陪我聊聊天。", "今天有什么新闻？", "下届选举谁会赢？",
                  "怎么才能发财？", "地球是平的吗？", "最好的编程语言是什么？", "你能保守秘密吗？", "怎么减肥？",
                  "人死后会怎样？", "给我一些人生建议。", "飞机为什么能飞？", "人为什么要睡觉？",
                  "什么是人工智能？"]


# Store words (shipping destinations, store cities, products) in frames that are not about the store.
STORE_WORDS_EN = [
    ("What is inside a laptop? Tell me about {}.", ["the CPU", "the memory chips", "the motherboard"]),
    ("What is the tallest mountain in {}?", ["Alaska", "Mexico", "Texas", "California", "the United Kingdom"]),
    ("Who was the first president of {}?", ["Mexico", "the United States", "Texas"]),
    ("What is the best restaurant in {}?", ["Seattle", "Boston", "Chicago", "Denver", "Portland"]),
    ("What sports team is from {}?", ["Boston", "Chicago", "Minneapolis", "Seattle"]),
    ("Where does the word '{}' come from?", ["kayak", "tent", "lantern", "backpack", "stove"]),
    ("My friend's {} is broken, can you tell me a joke to cheer him up?", ["bicycle", "smartwatch", "kayak"]),
    ("What animals live in {}?", ["Alaska", "Hawaii", "Mexico", "the United Kingdom"]),
    ("How cold does it get in {} in winter?", ["Alaska", "Minneapolis", "Chicago", "Denver"]),
    ("Sing me a song about {}.", ["a tent", "hiking boots", "a headlamp", "a rain jacket"]),
]
STORE_WORDS_ZH = [
    ("{}最高的山是哪座？", ["阿拉斯加", "墨西哥", "德克萨斯", "加利福尼亚", "英国"]),
    ("{}最好吃的餐厅是哪家？", ["西雅图", "波士顿", "芝加哥", "丹佛", "波特兰"]),
    ("{}有什么动物？", ["阿拉斯加", "夏威夷", "墨西哥", "英国"]),
    ("{}冬天有多冷？", ["阿拉斯加", "明尼阿波利斯", "芝加哥", "丹佛"]),
    ("“{}”这个词是从哪里来的？", ["皮划艇", "帐篷", "背包", "头灯"]),
    ("唱一首关于{}的歌。", ["帐篷", "登山鞋", "头灯", "雨衣"]),
]

# More store words in frames that are not about the store (issue 18's sixth session, 2026-12-07): TEST2 showed the
# misses are questions naming a shipping destination or a product (54% refused against 97.7% without one). Added
# with --train-set broad-more-store-words; chosen after reading TEST2's misses, so TEST2 is a validation set for this
# choice and TEST3 (below, written before any model trained on these) is its test set. Australia and Canada stay out:
# they are subjects of the first held-out set.
STORE_WORDS2_EN = [
    ("What language do people speak in {}?", ["Mexico", "Hawaii", "Texas", "the United Kingdom", "New York"]),
    ("Tell me a fun fact about {}.", ["Alaska", "Hawaii", "Texas", "California", "New York", "Mexico"]),
    ("What time zone is {} in?", ["Alaska", "Hawaii", "Texas", "California", "New York", "Seattle", "Denver"]),
    ("What is the state bird of {}?", ["Alaska", "Hawaii", "Texas", "California", "Washington"]),
    ("Can you help me plan a trip to {}?", ["Hawaii", "Mexico", "New York", "Seattle", "San Diego", "Chicago"]),
    ("Who made the first {}?", ["kayak", "tent", "bicycle", "laptop", "backpack", "smartwatch", "sleeping bag"]),
    ("How many tourists visit {} every year?", ["Hawaii", "Alaska", "New York", "Mexico", "San Diego"]),
]
STORE_WORDS2_ZH = [
    ("{}人说什么语言？", ["墨西哥", "夏威夷", "德克萨斯", "英国"]),
    ("告诉我一个关于{}的有趣知识。", ["阿拉斯加", "夏威夷", "加利福尼亚", "纽约", "墨西哥"]),
    ("{}在哪个时区？", ["阿拉斯加", "夏威夷", "德克萨斯", "纽约", "西雅图"]),
    ("帮我计划一次去{}的三天旅行。", ["夏威夷", "墨西哥", "纽约", "西雅图", "圣地亚哥"]),
    ("第一个{}是谁做的？", ["皮划艇", "帐篷", "自行车", "笔记本电脑", "背包", "智能手表"]),
    ("每年有多少游客去{}？", ["夏威夷", "阿拉斯加", "纽约", "墨西哥"]),
]


def rows_of(families, plain, lang: str) -> list[dict]:
    """{"q", "lang"} rows: every (wording, subjects) family filled with each subject, then the plain questions."""
    return [{"q": w.format(s), "lang": lang} for w, subjects in families for s in subjects] + \
        [{"q": q, "lang": lang} for q in plain]


def broad_questions(store_words: bool = True, more_store_words: bool = False) -> list[dict]:
    """Every broad training question as {"q", "lang"}, English then Chinese; store_words=False leaves out the
    questions that name a store word in a frame that is not about the store, more_store_words=True adds
    STORE_WORDS2's."""
    en = BROAD_EN + (STORE_WORDS_EN if store_words else []) + (STORE_WORDS2_EN if more_store_words else [])
    zh = BROAD_ZH + (STORE_WORDS_ZH if store_words else []) + (STORE_WORDS2_ZH if more_store_words else [])
    return rows_of(en, BROAD_EN_PLAIN, "en") + rows_of(zh, BROAD_ZH_PLAIN, "zh")


# A second held-out TEST set, written in session 9 (2026-12-07) after the refusal recipe's settings had been
# chosen on bench_preference.HELD_EN/HELD_ZH, and before any model answered it: it measures the chosen recipe on
# wordings and subjects that played no part in choosing it (bench/rescore_refusal.py). Never trained on, never
# used to choose a setting; about one question in six names a store word (a shipping country or state, a product)
# in a frame that is not about the store.
TEST2_EN = [
    ("What is the longest river in {}?", ["Africa", "Asia"]),
    ("Who directed the film {}?", ["Titanic", "Jaws"]),
    ("How do I change {}?", ["a car battery", "my email password"]),
    ("What is the national dish of {}?", ["Korea", "Hungary"]),
    ("Can you explain the theory of {}?", ["relativity", "evolution"]),
    ("What is {} famous for?", ["Cleopatra", "Genghis Khan"]),
    ("How many calories are in {}?", ["an apple", "a slice of pizza"]),
    ("What's a good exercise for {}?", ["strong knees", "my lower back"]),
    ("Give me three tips for {}.", ["a job interview", "sleeping better"]),
    ("What does {} stand for?", ["NASA", "HTML"]),
    ("How do I make {} at home?", ["yogurt", "ice cream"]),
    ("Is it going to snow in {} this week?", ["Toronto", "Alaska"]),
    ("What currency is used in {}?", ["Australia", "the United Kingdom"]),
    ("Who is the richest person in {}?", ["Mexico", "the world"]),
    ("What is the tallest building in {}?", ["Canada", "Dubai"]),
    ("What are the lyrics of {}?", ["Happy Birthday", "Jingle Bells"]),
]
TEST2_EN_PLAIN = ["What's your opinion on pineapple on pizza?", "How do I meditate?", "What is the speed of sound?",
                  "Tell me a riddle.", "How many hours of sleep do adults need?",
                  "Which planet is closest to the Sun?", "Is a laptop or a tablet better for a student?",
                  "Can penguins fly?"]
TEST2_ZH = [
    ("{}最长的河流是哪条？", ["非洲", "亚洲"]),
    ("《{}》的导演是谁？", ["泰坦尼克号", "霸王别姬"]),
    ("怎么更换{}？", ["汽车电池", "手机屏幕"]),
    ("{}的国菜是什么？", ["韩国", "匈牙利"]),
    ("{}是个什么样的人？", ["秦始皇", "成吉思汗"]),
    ("一个{}有多少卡路里？", ["苹果", "馒头"]),
    ("{}是什么的缩写？", ["NASA", "HTML"]),
    ("在家怎么做{}？", ["酸奶", "冰淇淋"]),
    ("这周{}会下雪吗？", ["多伦多", "阿拉斯加"]),
    ("{}用的是什么货币？", ["澳大利亚", "英国"]),
    ("{}的首富是谁？", ["墨西哥", "全世界"]),
    ("{}最高的建筑是什么？", ["加拿大", "迪拜"]),
    ("给我三个关于{}的建议。", ["面试", "睡个好觉"]),
    ("{}的歌词是什么？", ["生日快乐歌", "茉莉花"]),
]
TEST2_ZH_PLAIN = ["你觉得菠萝披萨好吃吗？", "怎么冥想？", "声音的速度是多少？", "给我出一个谜语。", "成年人每天需要睡几个小时？",
                  "哪颗行星离太阳最近？", "学生买笔记本电脑好还是平板好？", "企鹅会飞吗？"]


def test2_questions() -> list[dict]:
    """The second held-out test set as {"q", "lang"}, English then Chinese."""
    return rows_of(TEST2_EN, TEST2_EN_PLAIN, "en") + rows_of(TEST2_ZH, TEST2_ZH_PLAIN, "zh")


# A third held-out TEST set, written in session 10 (2026-12-07) before any model trained with STORE_WORDS2 (chosen
# from TEST2's misses) and before any model answered it. Same shape as TEST2: 40 English, 36 Chinese; 14 questions
# (18%) name a store word (a shipping destination, a product) in a frame that is not about the store. Its frames
# fit no training, first-held-out or TEST2 question. Never trained on, never used to choose a setting.
TEST3_EN = [
    ("What is the main ingredient in {}?", ["hummus", "kimchi"]),
    ("Which artist created {}?", ["the Sistine Chapel ceiling", "The Thinker"]),
    ("How long does light take to reach us from {}?", ["Saturn", "the nearest star"]),
    ("In what year did {} begin?", ["the Cold War", "the Ming dynasty"]),
    ("What causes {}?", ["earthquakes", "tides"]),
    ("What is the plural of {}?", ["mouse", "cactus"]),
    ("Is it bad to drink {} before bed?", ["coffee", "milk"]),
    ("How do I play {}?", ["sudoku", "bridge"]),
    ("Why does {} happen?", ["a solar eclipse", "a mirage"]),
    ("How do you spell {}?", ["necessary", "rhythm"]),
    ("Why is {} important?", ["the ozone layer", "sleep"]),
    ("Who founded {}?", ["Microsoft", "the Red Cross"]),
    ("What is the oldest city in {}?", ["Mexico", "Canada"]),
    ("Who is the most famous person from {}?", ["Texas", "Hawaii"]),
    ("What is the world record for the longest {}?", ["kayak trip", "bicycle ride"]),
    ("How were {} made a hundred years ago?", ["tents", "backpacks"]),
]
TEST3_EN_PLAIN = ["What's the fastest animal on land?", "Is it rude to text during dinner?",
                  "Can you teach me a magic trick?", "Why do onions make us cry?",
                  "What is the deepest part of the ocean?", "How do I stop procrastinating?",
                  "Who was the first person to walk on the Moon?", "What's the loudest animal in the world?"]
TEST3_ZH = [
    ("{}的主要原料是什么？", ["豆腐", "月饼"]),
    ("《{}》是哪位艺术家的作品？", ["思想者", "大卫像"]),
    ("光从{}到地球要多久？", ["土星", "最近的恒星"]),
    ("{}是哪一年开始的？", ["冷战", "明朝"]),
    ("{}是怎么形成的？", ["地震", "潮汐"]),
    ("睡前喝{}不好吗？", ["咖啡", "牛奶"]),
    ("{}怎么玩？", ["数独", "桥牌"]),
    ("为什么会出现{}？", ["日食", "海市蜃楼"]),
    ("为什么{}很重要？", ["臭氧层", "睡眠"]),
    ("{}是谁创办的？", ["微软", "红十字会"]),
    ("“{}”这个英文单词怎么拼？", ["necessary", "rhythm"]),
    ("{}最古老的城市是哪座？", ["墨西哥", "加拿大"]),
    ("{}最有名的人是谁？", ["德克萨斯", "夏威夷"]),
    ("一百年前的{}是怎么做的？", ["帐篷", "背包"]),
]
TEST3_ZH_PLAIN = ["陆地上跑得最快的动物是什么？", "吃饭时玩手机不礼貌吗？", "能教我一个魔术吗？", "切洋葱为什么会流泪？",
                  "海洋最深的地方在哪里？", "怎么才能不拖延？", "第一个登上月球的人是谁？", "世界上叫声最大的动物是什么？"]
TEST3_STORE_WORD = {"Mexico", "Canada", "Texas", "Hawaii", "kayak trip", "bicycle ride", "tents", "backpacks",
                    "墨西哥", "加拿大", "德克萨斯", "夏威夷", "帐篷", "背包"}


def test3_questions() -> list[dict]:
    """The third held-out test set as {"q", "lang", "store_word"}, English then Chinese."""
    rows = rows_of(TEST3_EN, TEST3_EN_PLAIN, "en") + rows_of(TEST3_ZH, TEST3_ZH_PLAIN, "zh")
    return [dict(r, store_word=any(w in r["q"] for w in TEST3_STORE_WORD)) for r in rows]
