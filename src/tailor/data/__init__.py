"""tailor.data"""
