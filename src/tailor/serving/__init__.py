"""tailor.serving"""
