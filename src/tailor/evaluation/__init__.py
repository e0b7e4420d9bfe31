"""tailor.evaluation"""
