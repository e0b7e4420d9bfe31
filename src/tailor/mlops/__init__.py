"""tailor.mlops"""
